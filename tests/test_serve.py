"""`evalkit serve`: evalkit's models behind the OpenAI API, checked with the official openai client, evalkit's
own `openai:` backend, the command line and raw HTTP."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import openai
import pytest
from mamba2_checkpoints import oracle, save_hf

from evalkit.backends.native import NativeBackend
from evalkit.backends.openai_api import OpenAIBackend
from evalkit.data import DataConfig
from evalkit.requests import ChatMessage, GenerationRequest, LoglikelihoodRequest, SamplingParams
from evalkit.runner import RunOptions, run_evaluation
from evalkit.serve import build_engine, is_loopback, serving
from evalkit.serve.engines import KnownAnswersEngine, PromptIndex
from evalkit.tasks import get_task

PROMPTS = ["def fib(n):", "import numpy as np\n\ndef mean(xs):\n    return", "SELECT name FROM"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(data_dir) -> DataConfig:
    return DataConfig.from_options(str(data_dir))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_hf(oracle(seed=5), tmp_path_factory.mktemp("served") / "ckpt")


@pytest.fixture(scope="module")
def native(checkpoint) -> NativeBackend:
    """The in-process model the served one must equal. It decodes one sequence at a time, as the server does for
    one request at a time: a batch of another size rounds the logits differently in the last bits, which is
    enough to change a sampled token of a random model whose 32768 probabilities are all about equal."""
    return NativeBackend.from_spec(str(checkpoint), dtype="float32", device="cpu", batch_size=1)


@pytest.fixture(scope="module")
def engine(checkpoint):
    engine = build_engine(str(checkpoint), backend_options={"dtype": "float32", "device": "cpu", "batch_size": 4},
                          name="tiny")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def url(engine) -> str:
    with serving(engine) as base_url:
        yield base_url


def test_reference_over_http_scores_one_on_humaneval_and_mmlu(tmp_path, data_dir):
    """The proof end to end: `evalkit serve --model reference` and `evalkit run --model openai:URL`, both from
    the command line, with an API key that must reach neither the run folder nor the output."""
    key = "sk-test-7f3a9c"
    env = {**os.environ, "EVALKIT_SERVE_API_KEY": key, "EVALKIT_API_KEY": key}
    server = subprocess.Popen([sys.executable, "-m", "evalkit.cli", "serve", "--model", "reference", "--tasks",
                               "humaneval,mmlu", "--port", "0", "--data-dir", str(data_dir)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in server.stdout], daemon=True).start()
        first = lines.get(timeout=60)
        assert "serving reference at http://127.0.0.1:" in first, first
        base_url = first.split(" at ")[1].split()[0]
        run = subprocess.run([sys.executable, "-m", "evalkit.cli", "run", "--model", f"openai:{base_url}", "--tasks",
                              "humaneval,mmlu", "--limit", "6", "--unsafe-local-execution", "--no-progress",
                              "--data-dir", str(data_dir), "-o", str(tmp_path)],
                             capture_output=True, text=True, env=env, timeout=180)
        assert run.returncode == 0, run.stderr
        (folder,) = tmp_path.iterdir()
        results = json.loads((folder / "results.json").read_text())
        assert results["tasks"]["humaneval"]["metrics"]["pass@1"] == 1.0
        assert results["tasks"]["mmlu"]["metrics"]["acc"] == 1.0
        assert results["tasks"]["humaneval"]["n"] == results["tasks"]["mmlu"]["n"] == 6
        assert results["tasks"]["humaneval"]["cut_by_max_tokens"] == 0.0
        backend = results["config"]["backend"]
        assert (backend["name"], backend["served_model"], backend["base_url"]) == ("openai", "reference", base_url)
        assert "token ids" in backend["requests"]["loglikelihood"]
        for path in folder.iterdir():
            assert key not in path.read_text(), path.name
        assert key not in run.stdout + run.stderr

        without_key = subprocess.run([sys.executable, "-m", "evalkit.cli", "run", "--model", f"openai:{base_url}",
                                      "--tasks", "mmlu", "--limit", "1", "--no-progress", "-o", str(tmp_path / "x")],
                                     capture_output=True, text=True, timeout=120,
                                     env={k: v for k, v in env.items() if k != "EVALKIT_API_KEY"})
        assert without_key.returncode == 2
        assert "HTTP 401" in without_key.stderr and "EVALKIT_API_KEY" in without_key.stderr
        assert "Traceback" not in without_key.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_official_openai_client_completes_and_gets_prompt_logprobs(url, native):
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny"]

    done = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=10, temperature=0, seed=3)
    expected = native.generate([GenerationRequest("t", PROMPTS[0], max_tokens=10)], SamplingParams())[0][0]
    assert done.choices[0].text == expected.text
    assert done.choices[0].finish_reason == expected.finish_reason
    assert done.usage.completion_tokens == expected.info["completion_tokens"]
    assert done.usage.prompt_tokens == len(native.tokenizer.encode(PROMPTS[0]))

    text = "The answer is B"
    echoed = client.completions.create(model="tiny", prompt=text, max_tokens=0, echo=True, logprobs=2)
    choice = echoed.choices[0]
    assert choice.text == text
    values = choice.logprobs.token_logprobs
    assert values[0] is None and len(values) == len(native.tokenizer.encode(text))
    assert "".join(choice.logprobs.tokens) == text
    assert all(len(top) >= 2 for top in choice.logprobs.top_logprobs[1:])
    (in_process,) = native.loglikelihood([LoglikelihoodRequest("t", "", (text,))])[0]
    assert sum(values[1:]) == pytest.approx(in_process, abs=1e-5)

    ids = native.tokenizer.encode(text)
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=0, echo=True, logprobs=0)
    assert by_ids.choices[0].logprobs.token_logprobs == values  # token ids in, no second BOS added

    # several prompts in one request share their common prefix on the server; each answer is as if alone
    for prompts in ([ids, ids + native.tokenizer.encode(" and C", bos=False), ids[:2]], [ids, ids[1:]]):
        many = client.completions.create(model="tiny", prompt=prompts, max_tokens=0, echo=True, logprobs=0)
        for together, prompt in zip(many.choices, prompts, strict=True):
            single = client.completions.create(model="tiny", prompt=prompt, max_tokens=0, echo=True, logprobs=0)
            assert together.logprobs.token_logprobs[0] is None
            assert together.logprobs.token_logprobs[1:] == pytest.approx(
                single.choices[0].logprobs.token_logprobs[1:], abs=1e-5)


def test_official_openai_client_chats(data_dir):
    """Chat through the reference engine: a known conversation gets its answer after the response prefix."""
    request = GenerationRequest("t/0", "add", messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "add")),
                                response_prefix="```python\n", reference="def add(a, b):\n    return a + b\n```\n")
    from evalkit.backends.reference import ReferenceBackend

    index = PromptIndex(["handmade"])
    index.add(request)
    engine = KnownAnswersEngine("ref", ReferenceBackend(), index)
    with serving(engine) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "add"},
                    {"role": "assistant", "content": "```python\n"}]
        answer = client.chat.completions.create(
            model="ref", messages=messages, max_tokens=64, temperature=0, seed=1, stop=["\n```"],
            extra_body={"continue_final_message": True, "add_generation_prompt": False})
        assert answer.choices[0].message.content == "def add(a, b):\n    return a + b"
        assert answer.choices[0].finish_reason == "stop"
        with pytest.raises(openai.BadRequestError, match="not one of the prompts"):
            client.chat.completions.create(model="ref", messages=messages[:2], max_tokens=64)
        with pytest.raises(openai.BadRequestError, match="add_generation_prompt=false"):
            client.chat.completions.create(model="ref", messages=messages, extra_body={"continue_final_message": True})

        backend = OpenAIBackend(base_url, max_retries=0)
        (got,) = backend.generate([request], SamplingParams())[0]
        assert got.text == request.reference and got.error is None
    engine.close()


@pytest.mark.parametrize("sampling", [SamplingParams(n=2), SamplingParams(n=3, temperature=0.9, top_p=0.95, seed=7)],
                         ids=["greedy", "sampled"])
def test_completions_over_http_equal_in_process(url, native, sampling):
    """Greedy and seeded samples through the server are the in-process backend's, token for token."""
    requests = [GenerationRequest(f"t{i}", p, max_tokens=12, stop=("\n\n",) if i else (),
                                  sample_indices=tuple(range(sampling.n))) for i, p in enumerate(PROMPTS)]
    over_http = OpenAIBackend(url, concurrency=1).generate(requests, sampling)
    in_process = native.generate(requests, sampling)
    for remote, local in zip(over_http, in_process, strict=True):
        assert [c.text for c in remote] == [c.text for c in local]
        # the native backend says "eos" where a server says "stop" (its only other reason is "length")
        assert [c.finish_reason for c in remote] == [{"eos": "stop"}.get(c.finish_reason, c.finish_reason)
                                                     for c in local]
        assert [c.info["completion_tokens"] for c in remote] == [c.info["completion_tokens"] for c in local]
        assert all(c.info["attempts"] == 1 and c.info["prompt_tokens"] == local[0].info["prompt_tokens"]
                   for c in remote)
    if sampling.temperature > 0:
        assert len({c.text for c in in_process[0]}) > 1  # the seeds really differ per sample


@pytest.mark.parametrize("use_token_ids", [True, False], ids=["token-ids", "text"])
def test_loglikelihoods_over_http_equal_in_process(url, native, data_dir, use_token_ids):
    mmlu = get_task("mmlu", DataConfig.from_options(str(data_dir)))
    requests = [mmlu.request(doc) for doc in mmlu.docs()[:3]]
    requests += [LoglikelihoodRequest("spaces", "The capital of France is  ", ("Paris", " Lyon", "")),
                 LoglikelihoodRequest("empty", "", ("def f():", " x"))]
    backend = OpenAIBackend(url, use_token_ids=use_token_ids)
    over_http = backend.loglikelihood(requests)
    in_process = native.loglikelihood(requests)
    for remote, local in zip(over_http, in_process, strict=True):
        assert remote == pytest.approx(local, abs=1e-5)
    assert ("token ids" in backend.describe()["requests"]["loglikelihood"]) == use_token_ids


def test_concurrent_requests_share_the_models_batch(url, engine):
    requests = [GenerationRequest(f"c{i}", PROMPTS[i % 3] + " " * (i // 3), max_tokens=8) for i in range(8)]
    one_by_one = OpenAIBackend(url, concurrency=1).generate(requests, SamplingParams())
    engine.worker.jobs_per_call.clear()
    together = OpenAIBackend(url, concurrency=8).generate(requests, SamplingParams())
    assert [[c.text for c in x] for x in together] == [[c.text for c in x] for x in one_by_one]
    assert max(engine.worker.jobs_per_call) > 1  # several HTTP requests went to the model as one batch
    assert sum(k * v for k, v in engine.worker.jobs_per_call.items()) == 8


def test_malformed_requests_get_openai_style_errors_and_the_server_lives_on(url):
    root = url.removesuffix("/v1")
    cases = [
        ("/v1/completions", b"{not json", 400, "JSON"),
        ("/v1/completions", {"max_tokens": 4}, 400, "prompt"),
        ("/v1/completions", {"prompt": "x", "max_tokens": "many"}, 400, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "top_k": 5}, 400, "top_k"),
        ("/v1/completions", {"prompt": "x", "top_p": 0}, 400, "top_p"),
        ("/v1/completions", {"prompt": "x", "n": 0}, 400, "n"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "echo"),
        ("/v1/completions", {"prompt": [1, 99999999]}, 400, "out of range"),
        ("/v1/completions", {"prompt": []}, 400, "empty"),
        ("/v1/completions", {"prompt": "x", "stream": True}, 400, "stream"),
        ("/v1/completions", {"prompt": "x", "presence_penalty": 1.0}, 400, "penalties"),
        ("/v1/completions", {"prompt": "x", "model": "gpt-4"}, 404, "does not exist"),
        ("/v1/chat/completions", {"messages": []}, 400, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, 400, "role"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"},
                                               {"role": "assistant", "content": "yo"}]}, 400, "ending with a user"),
        ("/tokenize", {"text": "x"}, 400, "prompt"),
        ("/v1/nothing", {}, 404, "Not Found"),
    ]
    with httpx.Client(timeout=30) as client:
        for path, body, status, fragment in cases:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            response = client.post(root + path, content=content, headers={"Content-Type": "application/json"})
            assert response.status_code == status, (path, body, response.text)
            error = response.json()["error"]
            assert fragment.lower() in error["message"].lower(), (path, body, error)
            assert error["type"] and error["code"] == status
        assert client.get(root + "/health").json() == {"status": "ok"}
        ok = client.post(url + "/completions", json={"prompt": "x", "max_tokens": 2, "temperature": 0})
        assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_api_key_is_required_when_set(engine, monkeypatch):
    with serving(engine, api_key="sekret") as base_url:
        with httpx.Client(timeout=30) as client:
            assert client.get(base_url + "/models").status_code == 401
            wrong = client.get(base_url + "/models", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
            assert client.get(base_url.removesuffix("/v1") + "/health").status_code == 200
        monkeypatch.setenv("OPENAI_API_KEY", "sekret")
        backend = OpenAIBackend(base_url, max_retries=0)
        assert backend.generate([GenerationRequest("k", "def", max_tokens=2)], SamplingParams())[0][0].error is None
        assert "sekret" not in json.dumps(backend.describe())


def test_non_loopback_host_warns_without_api_key():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    args = [sys.executable, "-m", "evalkit.cli", "serve", "--model", "replay:/no/such/file.jsonl", "--tasks",
            "humaneval", "--host", "0.0.0.0"]  # fails on the missing file before it binds
    open_to_all = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert open_to_all.returncode == 2
    assert "no authentication" in open_to_all.stderr and "does not exist" in open_to_all.stderr
    with_key = subprocess.run([*args, "--api-key", "k"], capture_output=True, text=True, timeout=60)
    assert "no authentication" not in with_key.stderr and with_key.returncode == 2


def test_replay_served_gives_each_sample_by_its_seed(tmp_path, data_dir):
    """A replay file with 3 samples per problem: over HTTP each request's seed picks its sample, and the run
    equals the in-process replay run."""
    data = DataConfig.from_options(str(data_dir))
    docs = get_task("humaneval", data).docs()[:3]
    replay = tmp_path / "samples.jsonl"
    with open(replay, "w") as f:
        for doc in docs:
            for k, body in enumerate(["    return None\n", doc["canonical_solution"], "    pass\n"]):
                f.write(json.dumps({"task_id": doc["task_id"], "completion": body + f"# sample {k}\n"}) + "\n")
    engine = build_engine(f"replay:{replay}", ["humaneval"], data, run_seed=99)
    with serving(engine) as base_url:
        opts = dict(tasks=["humaneval"], limit=3, data=data, unsafe_local=True, sampling=SamplingParams(n=3, seed=99))
        _, remote = run_evaluation(RunOptions(model=f"openai:{base_url}", output_dir=tmp_path / "http", **opts),
                                   progress=False, log=lambda m: None)
        _, local = run_evaluation(RunOptions(model=f"replay:{replay}", output_dir=tmp_path / "local", **opts),
                                  progress=False, log=lambda m: None)
        with pytest.raises(openai.BadRequestError, match="none of the 3 samples"):
            openai.OpenAI(base_url=base_url, api_key="x", max_retries=0).completions.create(
                model=engine.name, prompt=docs[0]["prompt"], max_tokens=10, seed=5)
    engine.close()

    def outcomes(folder: Path) -> list:  # the server cuts at the stop sequences; the programs run are the same
        rows = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
        return sorted((r["task_id"], r["sample_index"], r["program"], r["verdict"]) for r in rows)

    assert outcomes(next((tmp_path / "http").iterdir())) == outcomes(next((tmp_path / "local").iterdir()))
    assert remote["tasks"]["humaneval"]["metrics"] == local["tasks"]["humaneval"]["metrics"]
    assert remote["tasks"]["humaneval"]["metrics"]["pass@1"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("chat_format", [None, "mistral-v3"], ids=["server-template", "evalkit-template"])
def test_chat_over_http_equals_in_process(url, native, chat_format):
    """--chat against a served native model: rendered by the server (/v1/chat/completions) or by evalkit (its
    token ids to /v1/completions), the answer is the in-process backend's."""
    requests = [GenerationRequest(f"c{i}", "", max_tokens=10, stop=("\n```",), response_prefix=prefix,
                                  messages=(ChatMessage("system", "Answer in Python."), ChatMessage("user", ask)))
                for i, (ask, prefix) in enumerate([("Write fib.", "```python\n"), ("Add two numbers.", "")])]
    backend = OpenAIBackend(url, concurrency=1, chat_format=chat_format)
    over_http = backend.generate(requests, SamplingParams())
    in_process = native.generate(requests, SamplingParams())
    assert [c[0].text for c in over_http] == [c[0].text for c in in_process]
    assert [c[0].info["prompt_tokens"] for c in over_http] == [c[0].info["prompt_tokens"] for c in in_process]
    assert ("token ids" in backend.describe()["requests"]["chat"]) == (chat_format is not None)
    if chat_format:
        assert over_http[0][0].info["prompt_ids_sha256"] == in_process[0][0].info["prompt_ids_sha256"]


def test_reference_chat_prompts_over_http_score_one(data, tmp_path):
    """`evalkit run --chat` through `evalkit serve --model reference`: the chat form of every prompt is known."""
    engine = build_engine("reference", ["humaneval", "math500"], data)
    with serving(engine) as base_url:
        _, results = run_evaluation(RunOptions(model=f"openai:{base_url}", tasks=["humaneval", "math500"], limit=4,
                                               chat=True, data=data, unsafe_local=True, output_dir=tmp_path),
                                    progress=False, log=lambda m: None)
    engine.close()
    assert results["tasks"]["humaneval"]["metrics"]["pass@1"] == 1.0
    assert results["tasks"]["math500"]["metrics"]["accuracy"] == 1.0
