"""Prompt templates and seed data, shipped as package data (``importlib.resources``)."""
