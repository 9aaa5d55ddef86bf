"""Every command helps: `rdpo-jax --help` lists the commands and `rdpo-jax <command> --help` that command's
arguments and options (it used to treat `--help` as a config file name)."""
import pytest

from rdpo_jax.cli import COMMANDS, format_eval, main

EXPECTED = {"info": [], "train": ["config", "overrides"], "tiny": ["--root", "--fast", "--seed"],
            "analyze": ["checkpoint", "--compare", "--reference", "--task", "--parity-bits", "--n-boot"],
            "config": ["config", "overrides"],
            "judge": ["a", "b", "--against", "--data", "--split", "--allow-missing", "--out", "--protocol",
                      "--template-file", "--endpoint", "--judge-model", "--api-key-env", "--concurrency",
                      "--timeout", "--backoff-base", "--cache", "--dry-run", "--local-model", "--margin",
                      "--oracle"],
            "generate": ["--model", "--tokenizer", "--data", "--prompts", "--split", "--n", "--seed",
                         "--temperature", "--top-p", "--max-new-tokens", "--batch-size", "--out",
                         "--alpaca-eval"],
            "annotate": ["--data", "--split", "--out", "--template", "--both-orders", "--policy", "--on", "--check",
                         "--check-endpoint", "--target-tokenizer", "--local-model", "--endpoint", "--model",
                         "--api-key-env", "--cache", "--dry-run"]}


def test_every_command_is_listed(capsys):
    assert main(["--help"]) == 0
    printed = capsys.readouterr().out
    assert set(EXPECTED) == set(COMMANDS)
    for name, fn in COMMANDS.items():
        assert f"  {name}" in printed and fn.__doc__.split("\n")[0] in printed


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_command_help_lists_its_arguments(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"usage: rdpo-jax {name}")
    for option in EXPECTED[name]:
        assert option in printed


def test_config_prints_the_resolved_config_and_names_a_bad_key(capsys):
    assert main(["config", "train.loss=dpo", "optim.lr=5e-7"]) == 0
    printed = capsys.readouterr().out
    assert "loss: dpo" in printed and "lr: 5.0e-07" in printed
    assert main(["config", "train.nope=1"]) == 2
    assert "rdpo-jax config: ConfigError: " in capsys.readouterr().err


def test_final_eval_line():
    assert format_eval({"loss": 0.693147, "rewards/accuracies": 0.75}, 8) == \
        "final eval (step 8): loss 0.6931, rewards/accuracies 0.75"
    assert format_eval({}, 3) == "final eval (step 3): no held-out data"
