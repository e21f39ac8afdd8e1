"""The header every benchmark result carries: what a reader needs to trace a number to its run."""

from __future__ import annotations

from benchmarks.provenance import command, header, header_line, machine


def test_the_command_is_the_one_a_user_types_and_hides_secrets() -> None:
    line = command("benchmarks.real", ["--url", "http://127.0.0.1:8000", "--api-key", "sk-secret", "--token=abc"])
    assert line == "python -m benchmarks.real --url http://127.0.0.1:8000 --api-key *** --token=***"
    assert "sk-secret" not in line and "abc" not in line


def test_the_header_names_date_machine_command_and_commit() -> None:
    head = header(command=command("benchmarks.real", []), items=3)
    assert head["command"] == "python -m benchmarks.real" and head["items"] == 3
    assert head["commit"] and head["date"].startswith("20")
    # Detected, never written in: the core count and whether a GPU or bf16 instructions are there.
    assert head["machine"] == machine() and " cores, " in head["machine"]
    assert "GPU" in head["machine"] and "bf16" in head["machine"]
    assert head["commit"] in header_line(head) and head["machine"] in header_line(head)
