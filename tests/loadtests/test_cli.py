import pytest

from loadtests.cli import build_parser, main


@pytest.mark.parametrize("cmd", ["run", "validate", "capacity"])
def test_every_command_has_help_with_an_example(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"loadtest {cmd}" in out


def test_non_loopback_url_is_a_usage_error(capsys):
    assert main(["run", "--url", "http://192.0.2.1:8000", "--model", "m"]) == 2
    assert "only target this machine" in capsys.readouterr().err


def test_bad_duration_and_unknown_replica_kind_are_usage_errors(capsys):
    assert main(["run", "--url", "http://127.0.0.1:9", "--model", "m", "--duration", "soon"]) == 2
    assert main(["run", "--url", "http://127.0.0.1:9", "--model", "m", "--replica-kind", "tpu-9"]) == 2
    err = capsys.readouterr().err
    assert "cannot read duration" in err and "no price for replica kind" in err


def test_unreachable_server_is_a_usage_error(capsys):
    from optiserve.ray_cluster import free_port

    assert main(["run", "--url", f"http://127.0.0.1:{free_port()}", "--model", "m", "--no-replicas"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_capacity_needs_a_target():
    args = build_parser().parse_args(["capacity", "--model", "m", "--slo-p95-ms", "50"])
    assert main(["capacity", "--model", "m", "--slo-p95-ms", "50"]) == 2 and args.batching == "8:2"
