"""The `openai:` backend against `evalkit serve`, directly or through a proxy that injects faults: what it sends,
how it retries, what it records, and that faults or a server that dies mid-run change no result."""

from __future__ import annotations

import dataclasses
import json
import queue
import socket
import threading
from collections import Counter
from pathlib import Path

import pytest
from fault_proxy import FaultProxy
from mamba2_checkpoints import oracle, save_hf

from evalkit.backends.openai_api import OpenAIBackend, redact_url, retry_after_s
from evalkit.data import DataConfig
from evalkit.errors import BackendError
from evalkit.requests import Failure, GenerationRequest, SamplingParams, sample_seed
from evalkit.runner import RunOptions, run_evaluation
from evalkit.sanitize import truncate_at_stop
from evalkit.serve import build_engine, serving
from evalkit.tasks import get_task

FAST = {"backoff_s": (0.001, 0.004)}  # retries in tests wait milliseconds, not seconds


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(data_dir) -> DataConfig:
    return DataConfig.from_options(str(data_dir))


@pytest.fixture(scope="module")
def reference_root(data) -> str:
    """`evalkit serve --model reference --tasks humaneval,mmlu`, as http://host:port (no /v1)."""
    engine = build_engine("reference", ["humaneval", "mmlu"], data)
    with serving(engine) as url:
        yield url.removesuffix("/v1")
    engine.close()


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    """A tiny random Mamba-2 decoding one sequence at a time, so that samples do not depend on which requests
    happen to share a batch (a batch of another size rounds the logits differently in the last bits)."""
    checkpoint = save_hf(oracle(seed=3), tmp_path_factory.mktemp("tiny") / "ckpt")
    engine = build_engine(str(checkpoint), backend_options={"dtype": "float32", "device": "cpu", "batch_size": 1},
                          name="tiny")
    yield engine
    engine.close()


def humaneval_requests(data: DataConfig, n_docs: int, samples: int) -> list[GenerationRequest]:
    task = get_task("humaneval", data)
    return [dataclasses.replace(task.request(d), sample_indices=tuple(range(samples)))
            for d in task.docs()[:n_docs]]


def test_every_sampling_parameter_is_sent_explicitly(reference_root, data):
    requests = humaneval_requests(data, 2, 3)
    sampling = SamplingParams(n=3, temperature=0.7, top_p=0.9, seed=11)
    with FaultProxy(reference_root) as proxy:
        out = OpenAIBackend(proxy.url + "/v1").generate(requests, sampling)
        bodies = [body for path, body, _ in proxy.forwarded if path == "/v1/completions"]
    assert [[c.text for c in samples] for samples in out] == [[truncate_at_stop(r.reference, r.stop)] * 3
                                                              for r in requests]
    assert len(bodies) == 6  # one request per sample
    wanted = {(r.prompt, sample_seed(11, r.task_id, i)) for r in requests for i in range(3)}
    assert {(b["prompt"], b["seed"]) for b in bodies} == wanted
    for body in bodies:
        request = next(r for r in requests if r.prompt == body["prompt"])
        assert body == {"model": "reference", "prompt": request.prompt, "max_tokens": request.max_tokens,
                        "temperature": 0.7, "top_p": 0.9, "stop": list(request.stop), "seed": body["seed"], "n": 1}

    with FaultProxy(reference_root) as proxy:
        together = OpenAIBackend(proxy.url + "/v1", n_per_request=True).generate(requests, sampling)
        bodies = [body for path, body, _ in proxy.forwarded if path == "/v1/completions"]
        assert [len(s) for s in together] == [3, 3] and [b["n"] for b in bodies] == [3, 3]
        assert {b["seed"] for b in bodies} == {sample_seed(11, r.task_id, 0) for r in requests}
        proxy.rewrite = lambda path, body: {**body, "choices": body["choices"][:1]} if "choices" in body else body
        with pytest.raises(BackendError, match="ignores `n`"):
            OpenAIBackend(proxy.url + "/v1", n_per_request=True).generate(requests, sampling)


def test_a_cap_on_stop_strings_sends_the_first_ones_and_still_cuts_at_every_one(reference_root, data):
    """OpenAI's hosted API takes 4 stop strings and HumanEval has 5: the unsent ones still end the text here."""
    requests = humaneval_requests(data, 3, 1)
    unsent = requests[0].stop[-1]
    assert len(requests[0].stop) == 5

    def runs_on(path: str, body: dict) -> dict:  # a server that generates past the stop it was not sent
        return {**body, "choices": [{**c, "text": c["text"] + unsent + "print('past the stop')\n"}
                                    for c in body["choices"]]} if "choices" in body else body

    with FaultProxy(reference_root) as proxy:
        proxy.rewrite = runs_on
        capped = OpenAIBackend(proxy.url + "/v1", max_stop_sequences=4).generate(requests, SamplingParams())
        bodies = [body for path, body, _ in proxy.forwarded if path == "/v1/completions"]
    assert sorted(b["stop"] for b in bodies) == sorted(list(r.stop[:4]) for r in requests)
    assert [s[0].text for s in capped] == [truncate_at_stop(r.reference, r.stop) for r in requests]
    assert all(unsent not in s[0].text and s[0].finish_reason == "stop" for s in capped)

    with pytest.raises(BackendError, match="--max-stop-sequences must be >= 1"):
        OpenAIBackend(reference_root + "/v1", max_stop_sequences=0)
    from evalkit.backends import resolve_backend
    with pytest.raises(BackendError, match="--max-stop-sequences does not apply to --model 'reference'"):
        resolve_backend("reference", max_stop_sequences=4)


def test_retry_after_is_honoured_and_attempts_are_recorded(reference_root, data):
    requests = humaneval_requests(data, 3, 1)
    with FaultProxy(reference_root, faults=("429",), max_faults_per_body=2, retry_after="0.25") as proxy:
        backend = OpenAIBackend(proxy.url + "/v1", max_retries=3, **FAST)
        proxy.rate = 1.0
        out = backend.generate(requests, SamplingParams())
        assert proxy.outcomes["429"] == 6
    for (completion,) in out:
        assert completion.error is None and completion.info["attempts"] == 3
        assert completion.info["retry_wait_s"] == pytest.approx(0.5)  # the server's 2 x 0.25 s, not the backoff
        assert completion.info["latency_s"] >= 0.5
    assert retry_after_s(_response({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0  # a date in the past
    assert retry_after_s(_response({"Retry-After": "3600"})) == 120.0  # capped
    assert retry_after_s(_response({"retry-after-ms": "1500"})) == 1.5
    assert retry_after_s(_response({})) is None


def _response(headers: dict[str, str]):
    import httpx

    return httpx.Response(429, headers=headers)


def test_a_request_that_keeps_failing_is_an_error_sample_with_its_attempts(reference_root, data):
    requests = humaneval_requests(data, 2, 2)
    mmlu = get_task("mmlu", data)
    ll_requests = [mmlu.request(d) for d in mmlu.docs()[:2]]
    with FaultProxy(reference_root, faults=("500", "drop_before", "drop_after"), max_faults_per_body=1000) as proxy:
        backend = OpenAIBackend(proxy.url + "/v1", max_retries=2, **FAST)
        proxy.rate = 1.0  # every request fails from now on
        out = backend.generate(requests, SamplingParams(n=2))
        scores = backend.loglikelihood(ll_requests)
        assert sum(proxy.failures_per_body.values()) == 4 * 3 + 2 * 3  # 3 tries per sample, and per MMLU question
    for samples in out:
        for completion in samples:
            assert completion.text == "" and completion.info["attempts"] == 3
            assert "failed 3 times" in completion.error
    for failure in scores:
        assert isinstance(failure, Failure) and failure.info["attempts"] == 3 and "failed 3 times" in failure.error


def test_other_4xx_stop_the_run_with_the_servers_message(reference_root, data, tmp_path):
    """mbpp is not served: the server refuses its prompts with a 400, which is not retried and ends the run."""
    with FaultProxy(reference_root) as proxy:
        opts = RunOptions(model=f"openai:{proxy.url}/v1", tasks=["mbpp"], limit=3, data=data, output_dir=tmp_path,
                          unsafe_local=True)
        with pytest.raises(BackendError) as refused:
            run_evaluation(opts, progress=False, log=lambda m: None)
        keys = [key for path, _, key in proxy.forwarded if path == "/v1/completions"]
    message = str(refused.value)
    assert "HTTP 400" in message and "not one of the prompts of the served tasks" in message and "\n" not in message
    assert len(keys) == len(set(keys)) >= 1  # each refused request was sent once


def test_the_served_model_is_discovered_and_the_url_recorded_without_credentials(reference_root, monkeypatch):
    assert redact_url("https://user:pw@example.org:8443/v1/?api-key=s3cret") == "https://example.org:8443/v1"
    monkeypatch.setenv("EVALKIT_API_KEY", "s3cret")
    port = reference_root.rsplit(":", 1)[1]
    backend = OpenAIBackend(f"http://user:s3cret@127.0.0.1:{port}/v1/")
    described = backend.describe()
    assert described["served_model"] == "reference" and described["base_url"] == f"http://127.0.0.1:{port}/v1"
    assert described["server"]["version"].startswith("evalkit") and "s3cret" not in json.dumps(described)
    with pytest.raises(BackendError, match="does not serve 'gpt-4'; it serves reference"):
        OpenAIBackend(reference_root + "/v1", served_model="gpt-4")
    with FaultProxy(reference_root) as proxy:
        body_twice = {"data": [{"id": "a"}, {"id": "b"}]}
        proxy.rewrite = lambda path, body: body_twice if path == "/v1/models" else body
        with pytest.raises(BackendError, match="choose one with --served-model"):
            OpenAIBackend(proxy.url + "/v1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(BackendError, match="cannot reach"):
        OpenAIBackend(f"http://127.0.0.1:{closed}/v1", max_retries=1, **FAST)
    with pytest.raises(BackendError, match="expected openai:http"):
        OpenAIBackend("127.0.0.1:8000")


def test_a_server_without_prompt_logprobs_gets_an_error_naming_the_feature(reference_root, data):
    mmlu = get_task("mmlu", data)
    requests = [mmlu.request(d) for d in mmlu.docs()[:2]]
    with FaultProxy(reference_root) as proxy:
        proxy.hide = {"/tokenize"}
        text_prompts = OpenAIBackend(proxy.url + "/v1")
        assert "text" in text_prompts.describe()["requests"]["loglikelihood"]
        assert [max(range(4), key=s.__getitem__) for s in text_prompts.loglikelihood(requests)] == \
            [r.reference for r in requests]

        def no_logprobs(path: str, body: dict) -> dict:
            for choice in body.get("choices", []):
                choice["logprobs"] = None
            return body

        proxy.rewrite = no_logprobs
        with pytest.raises(BackendError, match="echo=true and logprobs"):
            text_prompts.loglikelihood(requests)


# --- faults and a dying server change no result ---------------------------------------------------------------

RUN = dict(tasks=["math500", "mmlu"], limit=2, max_tokens=16, requests_per_call=1,
           sampling=SamplingParams(n=2, temperature=0.8, seed=5))


def outcomes(folder: Path) -> dict[tuple, tuple]:
    """What each sample ended as: its completion (or log-likelihoods) and verdict; later lines win (resume)."""
    rows = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
    return {(r["task"], r["task_id"], r["sample_index"]): (r["completion"], r["verdict"]) for r in rows}


def evaluate(url: str, out: Path, data: DataConfig, resume: Path | None = None, tasks: list[str] | None = None,
             **backend) -> tuple[Path, dict]:
    opts = RunOptions(model=f"openai:{url}", output_dir=out, resume=resume, data=data,
                      **{**RUN, "tasks": tasks or RUN["tasks"]})
    return run_evaluation(opts, OpenAIBackend(url, concurrency=4, **backend), progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def clean_run(tiny_engine, data, tmp_path_factory) -> tuple[Path, dict]:
    with serving(tiny_engine) as url:
        return evaluate(url, tmp_path_factory.mktemp("clean"), data)


def test_faults_between_client_and_server_change_no_result(tiny_engine, clean_run, data, tmp_path):
    clean_folder, clean = clean_run
    assert clean["tasks"]["math500"]["verdicts"].get("error") is None
    with serving(tiny_engine) as url:
        with FaultProxy(url.removesuffix("/v1"), rate=0.5, seed=0, max_faults_per_body=2) as proxy:
            folder, faulty = evaluate(proxy.url + "/v1", tmp_path, data, max_retries=4, **FAST)
    assert set(proxy.outcomes) >= {"429", "500", "drop_before", "drop_after", "delay", "forwarded"}
    assert outcomes(folder) == outcomes(clean_folder)
    assert {t: r["metrics"] for t, r in faulty["tasks"].items()} == {t: r["metrics"] for t, r in clean["tasks"].items()}

    sample_lines = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
    assert len(sample_lines) == len({(r["task"], r["task_id"], r["sample_index"]) for r in sample_lines}) == 2 * 2 + 2
    generations = [json.loads(x) for x in (folder / "generations.jsonl").read_text().splitlines()]
    logged = Counter((g["task"], g["task_id"], i) for g in generations for i in g["sample_indices"])
    assert max(logged.values()) == 1

    # every try is counted once: a sample's attempts are 1 + the failures the proxy injected on its request
    key_by_seed = {body["seed"]: key for _, body, key in proxy.forwarded if body and "seed" in body}
    generated = [g for g in generations if g["task"] == "math500"]
    attempts = [info["attempts"] for g in generated for info in g["info"]]
    seeds = [sample_seed(5, g["task_id"], i) for g in generated for i in g["sample_indices"]]
    assert attempts == [1 + proxy.failures_per_body[key_by_seed[s]] for s in seeds]
    assert max(attempts) > 1


@pytest.mark.parametrize("tasks", [
    ["math500"],
    ["math500", "mmlu"],
], ids=["math500", "math500+mmlu"])
def test_a_server_that_dies_mid_run_and_comes_back_resumes_to_identical_results(tiny_engine, clean_run, data, tmp_path,
                                                                                tasks):
    clean_folder, clean = clean_run
    stop = threading.Event()
    urls: queue.Queue[str] = queue.Queue()

    def host() -> None:
        with serving(tiny_engine) as url:
            urls.put(url)
            stop.wait(timeout=120)

    first = threading.Thread(target=host, daemon=True)
    first.start()
    with FaultProxy(urls.get(timeout=30).removesuffix("/v1")) as proxy:
        def die_after_first_problem(path: str, count: int) -> None:
            if path == "/v1/completions" and sum(p == path for p, _, _ in proxy.forwarded) == 2:
                proxy.dead = True  # from now on every connection is dropped, as by a crashed server ...
                stop.set()  # ... and the server really stops

        proxy.after_forward = die_after_first_problem
        folder, broken = evaluate(proxy.url + "/v1", tmp_path, data, tasks=tasks, max_retries=1, **FAST)
        first.join(timeout=60)
        assert broken["tasks"]["math500"]["verdicts"]["error"] == 2  # the second problem's two samples
        if "mmlu" in tasks:
            assert broken["tasks"]["mmlu"]["verdicts"] == {"error": 2}

        stop.clear()
        second = threading.Thread(target=host, daemon=True)
        second.start()
        proxy.upstream, proxy.dead, proxy.after_forward = urls.get(timeout=30).removesuffix("/v1"), False, None
        _, resumed = evaluate(proxy.url + "/v1", tmp_path, data, resume=folder, tasks=tasks, **FAST)
        stop.set()
        second.join(timeout=60)
    assert outcomes(folder) == {k: v for k, v in outcomes(clean_folder).items() if k[0] in tasks}
    assert {t: r["metrics"] for t, r in resumed["tasks"].items()} == {t: clean["tasks"][t]["metrics"] for t in tasks}
    assert all("error" not in r["verdicts"] for r in resumed["tasks"].values())
