"""The shared diffusers plumbing: devices, dtypes, seeds, progress, loading errors and tiny pipelines."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import modaverse_audioldm  # noqa: E402, F401  (registers the tiny "audioldm" kind)
import modaverse_stable_diffusion  # noqa: E402, F401  (registers the tiny "stable-diffusion" kind)

from modaverse_agent import GenerationRequest, GeneratorError, OutputDir  # noqa: E402
from modaverse_agent import diffusion as d  # noqa: E402
from modaverse_agent.artifacts import Artifact  # noqa: E402
from modaverse_agent.diffusion import tiny as tiny_module  # noqa: E402
from modaverse_agent.generators import GenerationCancelled  # noqa: E402


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the user cache dir (platformdirs honours XDG_CACHE_HOME) at a temporary folder."""
    monkeypatch.delenv("MODAVERSE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "modaverse" / "tiny-pipelines"


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-sd")
    d.build_tiny_pipeline("stable-diffusion").save_pretrained(path)
    return path


def test_importing_the_module_pulls_in_no_model_stack() -> None:
    code = (
        "import sys, modaverse_agent.diffusion as d; d.options_schema('x/y'); "
        "heavy = {'torch', 'diffusers', 'transformers'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_options_schema() -> None:
    schema = d.options_schema("org/model", {"max_side": {"type": "integer"}})
    assert schema["additionalProperties"] is False
    assert schema["properties"]["model"]["default"] == "org/model"
    assert set(schema["properties"]) == {"model", "device", "dtype", "download", "max_side"}


def test_devices() -> None:
    assert d.resolve_device("cpu") == "cpu"
    assert d.resolve_device("auto") in ("cpu", "cuda", "mps")
    with pytest.raises(GeneratorError, match="unknown device 'tpu'"):
        d.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(GeneratorError, match=r"'cuda:1'.*CUDA is not available.*device = \"cpu\""):
            d.resolve_device("cuda:1")


def test_dtypes() -> None:
    assert d.resolve_dtype("auto", "cpu") is torch.float32
    assert d.resolve_dtype("auto", "cuda") is torch.float16
    assert d.resolve_dtype("auto", "mps") is torch.float16
    assert d.resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    with pytest.raises(GeneratorError, match="float16 is not supported on cpu"):
        d.resolve_dtype("float16", "cpu")
    with pytest.raises(GeneratorError, match="unknown dtype"):
        d.resolve_dtype("int8", "cpu")


def test_seeds_come_from_args_then_request_then_chance(tmp_path: Path) -> None:
    req = GenerationRequest("p", OutputDir(tmp_path), seed=5)
    assert d.resolve_seed({"seed": 9}, req) == 9
    assert d.resolve_seed({}, req) == 5
    drawn = d.resolve_seed({}, GenerationRequest("p", OutputDir(tmp_path)))
    assert 0 <= drawn <= d.SEED_MAX
    a, b = (torch.randn(4, generator=d.torch_generator(3)) for _ in range(2))
    assert torch.equal(a, b)


def test_step_progress_reports_each_step_and_follows_the_pipelines_count() -> None:
    seen: list[tuple[int, int]] = []
    with d.StepProgress("x", 3, lambda *a: seen.append(a)) as bar:
        bar.legacy(0, 999, None)
        assert bar.on_step_end(object(), 1, 500, {"latents": 1}) == {}

        class Heun:  # a scheduler that runs twice as many timesteps as requested steps
            num_timesteps = 6

        bar.on_step_end(Heun(), 5, 0, {})
        bar.step(99)
    assert seen == [(1, 3), (2, 3), (6, 6), (6, 6)]


def test_tiny_clip_tokenizer_is_built_offline_and_round_trips(tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    tok = d.tiny_clip_tokenizer()
    ids = tok("A photo of a cat").input_ids
    assert ids[0] == tok.convert_tokens_to_ids("<|startoftext|>") and ids[-1] == tok.convert_tokens_to_ids(
        "<|endoftext|>"
    )
    assert tok.decode(ids, skip_special_tokens=True).strip() == "a photo of a cat"
    assert tok.model_max_length == 77
    tok.save_pretrained(tmp_path)
    assert CLIPTokenizer.from_pretrained(tmp_path)("A photo of a cat").input_ids == ids
    rob = d.tiny_roberta_tokenizer()
    assert rob("dog").input_ids[0] == 0 and rob("dog").input_ids[-1] == 2 and rob.pad_token_id == 1


def test_tiny_pipelines_are_deterministic_marked_and_leave_the_global_rng_alone(tmp_path: Path) -> None:
    state = torch.random.get_rng_state()
    p1 = d.build_tiny_pipeline("stable-diffusion")
    p2 = d.build_tiny_pipeline("stable-diffusion")
    assert torch.equal(torch.random.get_rng_state(), state)
    w1, w2 = p1.unet.state_dict(), p2.unet.state_dict()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    p1.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())[d.UNTRAINED_KEY] is True
    with pytest.raises(GeneratorError, match="unknown tiny pipeline kind 'flux'"):
        d.build_tiny_pipeline("flux")


def test_tiny_random_is_built_once_into_the_user_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (cache / "stable-diffusion-v1").mkdir(parents=True)  # an interrupted earlier build
    first = d.tiny_pipeline_dir("stable-diffusion")
    assert first == cache / "stable-diffusion-v1" and (first / "model_index.json").is_file()
    assert [p.name for p in cache.iterdir()] == ["stable-diffusion-v1"]  # no temporary folder left behind

    def no_rebuild(kind: str, **_: Any) -> Any:
        raise AssertionError("rebuilt a cached tiny pipeline")

    monkeypatch.setattr(tiny_module, "build_tiny_pipeline", no_rebuild)
    assert d.tiny_pipeline_dir("stable-diffusion") == first
    loaded = d.load_pipeline(
        d.TINY_RANDOM, generator="g", accepted=("StableDiffusionPipeline",), tiny_kind="stable-diffusion", device="cpu"
    )
    assert (loaded.untrained, loaded.device, loaded.dtype, loaded.source) == (True, "cpu", "float32", str(first))


def test_the_core_knows_no_tiny_kind_until_a_plugin_registers_one() -> None:
    code = (
        "import modaverse_agent.diffusion as d; assert d.tiny_kinds() == (), d.tiny_kinds(); "
        "import modaverse_stable_diffusion as m; assert d.tiny_kinds() == ('stable-diffusion',), d.tiny_kinds(); "
        "assert m.StableDiffusionGenerator.tiny_kind == 'stable-diffusion'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_registering_tiny_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiny_module, "_registry", {})

    def build_a() -> Any:
        raise AssertionError("not called")

    def build_b() -> Any:
        raise AssertionError("not called")

    d.register_tiny_pipeline("kind-a", build_a, version=3)
    d.register_tiny_pipeline("kind-a", build_a, version=3)  # a reloaded plugin registers again: fine
    assert d.tiny_kinds() == ("kind-a",)
    with pytest.raises(GeneratorError, match=r"'kind-a' is already registered by .*build_a; .*build_b must choose"):
        d.register_tiny_pipeline("kind-a", build_b)
    with pytest.raises(GeneratorError, match=r"kind '\.\./x' must be letters, digits"):
        d.register_tiny_pipeline("../x", build_b)
    with pytest.raises(GeneratorError, match="version must be a positive integer, not 0"):
        d.register_tiny_pipeline("kind-b", build_b, version=0)
    with pytest.raises(GeneratorError, match=r"unknown tiny pipeline kind 'kind-b'; known kinds: \['kind-a'\].*import"):
        d.tiny_pipeline_dir("kind-b")


def test_tiny_pipelines_follow_the_project_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modaverse_agent.cache import cache_dir

    monkeypatch.setenv("MODAVERSE_CACHE", str(tmp_path / "project-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert d.tiny_cache_root() == cache_dir() / "tiny-pipelines" == tmp_path / "project-cache" / "tiny-pipelines"
    built = d.tiny_pipeline_dir("stable-diffusion")
    assert built == tmp_path / "project-cache" / "tiny-pipelines" / "stable-diffusion-v1"
    assert (built / "model_index.json").is_file() and not (tmp_path / "xdg").exists()


def test_bytes_to_unicode_maps_every_byte_to_its_own_printable_character() -> None:
    table = d.bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ"


def test_load_pipeline_errors_name_the_model_and_what_to_do(sd_dir: Path, tmp_path: Path) -> None:
    kw: dict[str, Any] = {"generator": "g", "tiny_kind": "stable-diffusion", "device": "cpu"}
    with pytest.raises(GeneratorError) as info:
        d.load_pipeline("someone/not-cached", accepted=("StableDiffusionPipeline",), **kw)
    msg = str(info.value)
    assert "'someone/not-cached'" in msg and "not in the local Hugging Face cache" in msg
    assert "hf download someone/not-cached" in msg and "download = true" in msg
    with pytest.raises(GeneratorError) as info:  # offline here (HF_HUB_OFFLINE, no sockets): the fetch fails
        d.load_pipeline("someone/not-cached", accepted=("StableDiffusionPipeline",), download=True, **kw)
    assert "could not be fetched from the Hugging Face Hub" in str(info.value)
    assert "download = true" not in str(info.value)
    with pytest.raises(GeneratorError, match=r"is a StableDiffusionPipeline pipeline, but generator 'g' runs AudioLDM"):
        d.load_pipeline(str(sd_dir), accepted=("AudioLDMPipeline",), **kw)
    with pytest.raises(GeneratorError, match="does not exist"):
        d.load_pipeline(str(tmp_path / "gone"), accepted=("StableDiffusionPipeline",), **kw)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text((sd_dir / "model_index.json").read_text())
    with pytest.raises(GeneratorError, match=r"could not load model .*broken.*complete diffusers pipeline"):
        d.load_pipeline(str(broken), accepted=("StableDiffusionPipeline",), **kw)


def test_call_pipeline_turns_failures_into_generator_errors() -> None:
    def bad_input(**_: Any) -> None:
        raise ValueError("`height` has to be divisible by 8")

    def oom(**_: Any) -> None:
        raise RuntimeError("out of memory")

    with pytest.raises(GeneratorError, match="'g' rejected the request: `height`"):
        d.call_pipeline("g", bad_input)
    with pytest.raises(GeneratorError, match="failed while generating: out of memory; fewer steps"):
        d.call_pipeline("g", oom)


class _TinyImage(d.DiffusersGenerator):
    """A minimal generator on the base class (the real ones live in plugins/)."""

    name = "tiny-image-test"
    task = "text-to-image"
    modality = "image"
    description = "Test generator."
    default_model = d.TINY_RANDOM
    pipeline_classes = ("StableDiffusionPipeline",)
    tiny_kind = "stable-diffusion"
    args_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"steps": {"type": "integer", "minimum": 1, "default": 2}, "seed": d.seed_schema()},
        "additionalProperties": False,
    }

    def run(self, request: GenerationRequest) -> list[Artifact]:
        args = self.arguments(request)
        seed = d.resolve_seed(args, request)
        with self.progress(request, args["steps"]) as bar:
            out = self.pipeline.pipe(
                request.prompt,
                num_inference_steps=args["steps"],
                generator=d.torch_generator(seed),
                callback_on_step_end=bar.on_step_end,
            )
        path = request.output.write_image(self.stem(seed), out.images[0])
        return [self.finish(request, path, seed, steps=args["steps"])]


def test_base_class_defaults_to_the_tiny_pipeline_and_labels_it_untrained(cache: Path, tmp_path: Path) -> None:
    g = _TinyImage(device="cpu")
    assert g.options_schema["properties"]["model"]["default"] == d.TINY_RANDOM
    assert g.option("model") == d.TINY_RANDOM and g.option("dtype") == "auto"
    (art,) = g.generate(GenerationRequest("a cat", OutputDir(tmp_path), {"seed": 1}))
    assert art.seed == 1 and art.path.name == "tiny-image-test-1.png"
    assert art.metadata == {
        "model": d.TINY_RANDOM,
        "pipeline": "StableDiffusionPipeline",
        "device": "cpu",
        "dtype": "float32",
        "seed": 1,
        "steps": 2,
        "untrained": True,
    }
    g.unload()
    assert not g.loaded and g._pipeline is None


def test_a_directory_without_the_mark_is_not_labelled_untrained(tmp_path: Path) -> None:
    copy = tmp_path / "sd"
    d.build_tiny_pipeline("stable-diffusion").save_pretrained(copy)
    index = json.loads((copy / "model_index.json").read_text())
    del index[d.UNTRAINED_KEY]
    (copy / "model_index.json").write_text(json.dumps(index))
    (art,) = _TinyImage(model=str(copy), device="cpu").generate(GenerationRequest("a cat", OutputDir(tmp_path)))
    assert "untrained" not in art.metadata and art.metadata["model"] == str(copy)


def test_an_unwritable_cache_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.delenv("MODAVERSE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(GeneratorError, match=r"cannot write the tiny audioldm pipeline under .*user cache dir"):
        d.tiny_pipeline_dir("audioldm")


# -- cancellation and per-device caps (issue 17) ----------------------------------------------------------


def test_step_progress_stops_a_cancelled_pipeline() -> None:
    cancel = threading.Event()
    with d.StepProgress("x", 4, cancel=cancel) as bar:
        bar.legacy(0, 999, None)
        cancel.set()
        with pytest.raises(GenerationCancelled, match="x: cancelled after 1 of 4 steps"):
            bar.on_step_end(object(), 1, 500, {})


def test_a_cancelled_pipeline_call_stops_at_the_next_step_and_writes_nothing(cache: Path, tmp_path: Path) -> None:
    g = _TinyImage(device="cpu")
    seen: list[tuple[int, int]] = []
    req = GenerationRequest("a cat", OutputDir(tmp_path / "out"), {"steps": 50, "seed": 0})

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if done == 2:
            req.cancel.set()  # what the agent does when the invocation times out

    req.progress = progress
    with pytest.raises(GenerationCancelled):
        g.generate(req)
    assert seen == [(1, 50), (2, 50)] and list((tmp_path / "out").iterdir()) == []
    g.unload()


class _Capped(_TinyImage):
    name = "capped-test"
    caps: ClassVar[dict[str, d.Cap]] = {
        "steps": d.Cap("max_steps", 8, 40, "denoising steps"),
        "duration": d.Cap("max_duration", 2.5, 10.0, "seconds"),
    }
    args_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "steps": {"type": "integer", "minimum": 1, "maximum": 100, "default": 2},
            "duration": {"type": "number", "maximum": 30},
        },
        "additionalProperties": False,
    }


def test_caps_are_zoo_options_with_per_device_defaults() -> None:
    props = _Capped.options_schema["properties"]
    assert props["max_steps"] == {
        "type": "integer",
        "exclusiveMinimum": 0,
        "description": "most denoising steps an invocation may ask for (default: 8 on cpu, 40 on cuda/mps)",
    }
    assert props["max_duration"]["type"] == "number" and "model" in props
    g = _Capped(device="cpu")
    assert (g.cap("steps", "cpu"), g.cap("steps", "cuda"), g.cap("steps", "mps"), g.cap("duration", "cpu")) == (
        8,
        40,
        40,
        2.5,
    )
    g.configure(max_steps=100)
    assert g.cap("steps", "cpu") == g.cap("steps", "cuda:1") == 100
    with pytest.raises(GeneratorError, match="max_steps"):
        g.configure(max_steps=0)


def test_work_over_the_cap_is_refused_naming_the_argument_the_cap_and_the_option(tmp_path: Path) -> None:
    g = _Capped(device="cpu")
    with pytest.raises(GeneratorError) as info:
        g.generate(GenerationRequest("a cat", OutputDir(tmp_path), {"steps": 9}))
    assert str(info.value) == (
        "args of generator 'capped-test': steps 9 is over the cap of 8 on cpu; ask for less, or raise the cap with "
        "`modaverse zoo set text-to-image capped-test -o max_steps=9`"
    )
    with pytest.raises(GeneratorError, match=r"duration 2\.75 is over the cap of 2\.5 on cpu.*-o max_duration=2\.75"):
        g.generate(GenerationRequest("a cat", OutputDir(tmp_path), {"duration": 2.75}))
    assert not g.loaded and list(tmp_path.iterdir()) == []
    g.check(GenerationRequest("a cat", OutputDir(tmp_path), {"steps": 8, "duration": 2.5}))  # at the cap: fine
    g.configure(max_steps=9)
    g.check(GenerationRequest("a cat", OutputDir(tmp_path), {"steps": 9}))
    with pytest.raises(GeneratorError, match="over the cap of 9 on cuda"):  # the option holds on every device
        g.within_cap("steps", 40, device="cuda")
    _Capped(device="cpu").within_cap("steps", 40, device="cuda")  # the default cap on cuda is higher
