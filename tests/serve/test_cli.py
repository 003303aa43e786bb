import pytest

from serve.cli import main


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["start", "--help"])
    assert exc.value.code == 0 and "modelserve start --repository" in capsys.readouterr().out


def test_config_command_writes_a_serve_deploy_file(repo, tmp_path, capsys):
    out = tmp_path / "serve_config.yaml"
    assert main(["config", "--repository", str(repo), "-o", str(out)]) == 0
    assert "import_path: serve.app:model_app" in out.read_text()


def test_user_errors_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPTISERVE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["config", "--repository", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: model repository")
    assert main(["status"]) == 2
    assert "no running server" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults: {max_queue: -1}")
    assert main(["start", "--repository", str(tmp_path), "--config", str(bad)]) == 2
    assert "max_queue" in capsys.readouterr().err
