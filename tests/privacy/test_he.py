"""Encrypted inference (tujie_privacy.he): keys and parameters, compilation (exact, fitted, refused), agreement under
encryption, the HTTP service with its limits, and the CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tenseal as ts
import torch

from tujie_core import DataError, create_model, train_from_config
from tujie_core.runs import parse_config
from tujie_privacy.he import (
    BackgroundServer,
    HEClient,
    HEModel,
    ParameterError,
    ServiceClient,
    ServiceLimits,
    choose_parameters,
    compile_model,
    context_facts,
    free_port,
    wait_until_serving,
)


def square_mlp(outputs: int = 3, features: int = 6) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(
        "mlp",
        input_shape=(features,),
        num_outputs=outputs,
        hidden=[5],
        activation="square",
        input_mean=[2.0] * features,
        input_std=[3.0] * features,
    ).eval()


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(0).normal(2.0, 3.0, size=(300, 6))


@pytest.fixture(scope="module")
def compiled(inputs: np.ndarray) -> HEModel:
    return compile_model(square_mlp(), inputs, output="logits", meta={"class_names": ["a", "b", "c"]})


def torch_outputs(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(x, dtype=torch.float32)).double().numpy()


def test_round_trip_of_small_vectors_packs_samples_feature_major() -> None:
    keys = HEClient(choose_parameters(1))
    x = np.array([[0.5, -1.25, 3.0], [2.0, 0.0, -7.5]])
    encrypted = keys.encrypt(x)
    assert encrypted.shape == [3]  # one ciphertext per feature, both samples in its slots
    np.testing.assert_allclose(keys.decrypt(encrypted.serialize(), 2), x, atol=1e-6)
    with pytest.raises(DataError, match="encrypt takes"):
        keys.encrypt(np.zeros((keys.slots + 1, 3)))


def test_public_context_has_no_secret_key_and_cannot_decrypt() -> None:
    keys = HEClient(choose_parameters(3))
    server_side = ts.context_from(keys.public_context())
    assert not server_side.is_private() and not server_side.has_secret_key()
    ciphertext = ts.ckks_tensor_from(server_side, keys.encrypt(np.ones((4, 2))).serialize())
    with pytest.raises(ValueError, match="secret_key"):
        ciphertext.decrypt()
    facts = context_facts(server_side)
    assert (facts.private, facts.depth, facts.security >= 128, facts.relin_keys) == (False, 3, True, True)


def test_parameters_follow_the_depth_and_security_level() -> None:
    shallow, deep = choose_parameters(1), choose_parameters(5)
    assert shallow.poly_modulus_degree == 8192 and shallow.depth == 1
    assert deep.poly_modulus_degree == 16384 and deep.depth == 5
    assert choose_parameters(2, security=256).poly_modulus_degree > choose_parameters(2).poly_modulus_degree
    for p in (shallow, deep):  # each meets the HE standard's bound for its ring
        assert context_facts(p.context()).security >= 128
    with pytest.raises(ParameterError, match="more than N = 32768"):
        choose_parameters(30)
    with pytest.raises(ParameterError, match="security must be one of"):
        choose_parameters(1, security=100)


def test_square_mlp_compiles_exactly_and_agrees_under_encryption(compiled: HEModel, inputs: np.ndarray) -> None:
    model = square_mlp()
    assert compiled.describe() == "linear(6→5) → square → linear(5→3) → logits"
    assert compiled.depth == 3 and compiled.meta["max_abs_error_vs_original"] < 1e-9
    keys = HEClient(compiled.parameters())
    server = ts.context_from(keys.public_context())
    result = compiled.encrypted(ts.ckks_tensor_from(server, keys.encrypt(inputs).serialize()))
    decrypted = keys.decrypt(result.serialize(), len(inputs))
    expected = torch_outputs(model, inputs)
    assert np.abs(decrypted - expected).max() < 1e-3
    assert (decrypted.argmax(1) == expected.argmax(1)).all()


def test_compile_refuses_what_it_cannot_evaluate_naming_the_layer(inputs: np.ndarray) -> None:
    cnn = create_model("cnn", input_shape=(1, 8, 8), num_outputs=2)
    with pytest.raises(DataError, match=r"layer 0 \(Conv2d\) has no plain form"):
        compile_model(cnn)
    relu = create_model("mlp", input_shape=(6,), num_outputs=1, hidden=[5], activation="relu").eval()
    with pytest.raises(DataError, match=r"hidden layer 1 \(relu after linear\(6→5\)\) is not a polynomial"):
        compile_model(relu)  # no calibration data to fit one on
    torch.manual_seed(3)
    wide = create_model("mlp", input_shape=(6,), num_outputs=1, hidden=[64], activation="relu").eval()
    with torch.no_grad():
        wide[-1].weight.mul_(torch.randn_like(wide[-1].weight).sign() * 40)  # decisions hinge on ReLU's kink
    with pytest.raises(DataError, match=r"hidden layer 1 \(relu.*degree-2 polynomial.*changes .* decisions"):
        compile_model(wide, inputs)


def test_a_smooth_activation_is_fitted_on_the_calibration_range(inputs: np.ndarray) -> None:
    torch.manual_seed(0)
    model = create_model(
        "mlp",
        input_shape=(6,),
        num_outputs=1,
        hidden=[4],
        activation="tanh",
        input_mean=[2.0] * 6,
        input_std=[30.0] * 6,
    ).eval()  # inputs land near zero, where tanh is nearly odd-cubic
    compiled = compile_model(model, inputs, degree=3)
    activation = compiled.activations[0]
    assert activation.degree == 3 and activation.max_error < 1e-2
    assert compiled.meta["agreement_vs_original"] >= 0.99 and compiled.depth == 1 + 2 + 1
    keys = HEClient(compiled.parameters())
    result = compiled.encrypted(keys.encrypt(inputs))
    np.testing.assert_allclose(keys.decrypt(result, len(inputs)), compiled.plain(inputs), atol=1e-3)


def test_compiled_model_saves_and_loads_identically(compiled: HEModel, inputs: np.ndarray, tmp_path: Path) -> None:
    loaded = HEModel.load(compiled.save(tmp_path / "he"))
    np.testing.assert_array_equal(loaded.plain(inputs), compiled.plain(inputs))
    assert loaded.describe() == compiled.describe() and loaded.meta["class_names"] == ["a", "b", "c"]


def test_service_end_to_end_and_rejects_bad_requests_with_4xx(compiled: HEModel, inputs: np.ndarray) -> None:
    limits = ServiceLimits(max_request_bytes=8 << 20, max_context_bytes=8 << 20, max_sessions=2, session_ttl=60)
    with BackgroundServer({"toy": compiled}, limits) as server:
        client = ServiceClient(server.url)
        expected = torch_outputs(square_mlp(), inputs)
        assert np.abs(client.predict(inputs) - expected).max() < 1e-3
        predict = f"{server.url}/sessions/{client.session}/predict"
        good = client.keys.encrypt(inputs[:5]).serialize()
        shallow = HEClient(choose_parameters(1))
        private = client.keys._context.serialize(save_secret_key=True)
        cases = {
            "garbage": (predict, b"not a ciphertext", 400),
            "truncated": (predict, good[: len(good) // 2], 400),
            "empty": (predict, b"", 400),
            "oversized": (predict, b"x" * (9 << 20), 413),
            "other parameters": (predict, shallow.encrypt(inputs[:5]).serialize(), 400),
            "wrong width": (predict, client.keys.encrypt(inputs[:5, :4]).serialize(), 422),
            "unknown session": (f"{server.url}/sessions/nope/predict", good, 404),
            "context too shallow": (f"{server.url}/sessions?model=toy", shallow.public_context(), 422),
            "secret key sent": (f"{server.url}/sessions?model=toy", private, 422),
            "context garbage": (f"{server.url}/sessions?model=toy", b"\x00" * 100, 400),
            "unknown model": (f"{server.url}/sessions?model=other", good, 404),
        }
        for name, (url, body, status) in cases.items():
            response = httpx.post(url, content=body, timeout=60)
            assert response.status_code == status, (name, response.text)
            assert response.json()["detail"], name
        # still serving: the same session predicts again, a second session opens, a third is one too many
        assert np.abs(client.predict(inputs[:7]) - expected[:7]).max() < 1e-3
        second = ServiceClient(server.url, "toy")
        with pytest.raises(Exception, match="429"):
            ServiceClient(server.url)
        second.close()
        client.close()
        assert httpx.get(f"{server.url}/health").json()["sessions"] == 0


def test_sessions_expire_after_their_idle_time(compiled: HEModel) -> None:
    with BackgroundServer({"toy": compiled}, ServiceLimits(session_ttl=0.5)) as server:
        client = ServiceClient(server.url)
        time.sleep(1.2)
        assert len(server.app.state.store) == 0  # swept without any request arriving
        with pytest.raises(Exception, match=r"404.*expired"):
            client.predict(np.zeros((2, 6)))


@pytest.fixture(scope="module")
def square_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = {
        "name": "digits-square",
        "output_dir": str(tmp_path_factory.mktemp("runs")),
        "data": {"name": "digits", "batch_size": 64},
        "model": {"name": "mlp", "hidden": [8], "activation": "square", "dropout": 0.0},
        "trainer": {"max_epochs": 2, "progress": "none"},
    }
    return train_from_config(parse_config(raw)).run_dir


def test_cli_compiles_serves_and_predicts_a_file_skipping_bad_rows(tujie, square_run: Path, tmp_path: Path) -> None:
    done = tujie("privacy", "he-compile", str(square_run), str(tmp_path / "he"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "linear(64→8) → square → linear(8→10) → logits" in done.stdout
    from sklearn.datasets import load_digits

    x = load_digits().data[:20] / 16.0
    rows = [",".join(f"f{i}" for i in range(64))] + [",".join(f"{v:g}" for v in row) for row in x]
    rows[3] = rows[3].replace("0", "zero", 1)  # a non-number in line 4
    rows[5] = "1,2,3"  # a short line 6
    (tmp_path / "digits.csv").write_text("\n".join(rows) + "\n")
    port = free_port()
    command = [str(Path(sys.executable).parent / "tujie"), "privacy", "he-serve", f"digits={tmp_path / 'he'}"]
    serve = subprocess.Popen([*command, "--port", str(port)], cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url)
        done = tujie("privacy", "he-predict", url, str(tmp_path / "digits.csv"), "--output", "p.csv", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "18 of 20 rows predicted under encryption" in done.stdout and "2 rejected" in done.stdout
        lines = (tmp_path / "p.csv").read_text().splitlines()
        assert lines[0].startswith("row,label,p_0") and len(lines) == 19
        rejects = (tmp_path / "p.csv.rejects.csv").read_text()
        assert "not a number" in rejects and "3 fields, expected 64" in rejects
        plain = HEModel.load(tmp_path / "he").plain(x)
        good = [i for i in range(20) if i not in (2, 4)]
        labels = [line.split(",")[1] for line in lines[1:]]
        assert labels == [str(int(plain[i].argmax())) for i in good]
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def test_cli_bad_input_exits_2_with_one_line(tujie, tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    cnn_run = tmp_path / "nothing"
    cases = [
        ("privacy", "he-predict", f"http://127.0.0.1:{free_port()}", str(tmp_path / "x.csv")),
        ("privacy", "he-predict", "http://127.0.0.1:1", str(tmp_path / "missing.csv")),
        ("privacy", "he-serve", str(cnn_run)),
        ("privacy", "he-compile", str(cnn_run), str(tmp_path / "out")),
    ]
    for args in cases:
        done = tujie(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr


def test_a_run_on_data_standardised_outside_the_model_takes_raw_features(tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    from tujie_core.run import load_run
    from tujie_privacy.he import compile_run

    raw = {
        "name": "bc",
        "output_dir": str(tmp_path),
        "data": {"name": "breast_cancer", "batch_size": 64},
        "model": {"name": "mlp", "hidden": [8], "activation": "square"},
        "trainer": {"max_epochs": 2, "progress": "none"},
    }
    run_dir = train_from_config(parse_config(raw)).run_dir
    compiled = compile_run(run_dir)
    assert compiled.meta["feature_names"][0] == "mean radius"
    run = load_run(run_dir)
    scaling = run.model_config["input_standardization"]
    x = load_breast_cancer().data[:50]
    expected = torch_outputs(run.task.model, (x - np.asarray(scaling["mean"])) / np.asarray(scaling["std"]))
    np.testing.assert_allclose(compiled.plain(x), expected, atol=1e-4)


def test_a_bare_linear_head_compiles_like_a_text_classifiers_classifier(inputs: np.ndarray) -> None:
    torch.manual_seed(1)
    head = torch.nn.Linear(6, 4)  # e.g. a mean-pooled tujie_nlp classifier's hf_model.classifier over embeddings
    compiled = compile_model(head, output="logits")
    assert compiled.describe() == "linear(6→4) → logits" and compiled.depth == 1
    keys = HEClient(compiled.parameters())
    decrypted = keys.decrypt(compiled.encrypted(keys.encrypt(inputs)), len(inputs))
    assert np.abs(decrypted - torch_outputs(head, inputs)).max() < 1e-3
