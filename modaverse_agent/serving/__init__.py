"""Conversation surfaces over one agent: ``modaverse serve`` (an OpenAI-compatible HTTP server),
``modaverse chat`` (the terminal chat) and ``modaverse web`` (the Gradio page).

All three are thin shells over :class:`~modaverse_agent.conversation.Conversation` and
:meth:`~modaverse_agent.agent.ModaVerseAgent.stream`.
"""
