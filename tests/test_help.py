"""Every subcommand's --help has an example, and every option that is not required or a flag names its default."""
from __future__ import annotations

import argparse

from cli.main import build_parser


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_subcommand_has_an_example_and_every_option_its_default():
    subs = _subparsers()
    assert {"simulate", "phase", "train", "reconstruct", "evaluate", "demo", "serve", "worker", "fetch"} <= set(subs)
    missing = []
    for name, sub in subs.items():
        text = sub.format_help()
        if "examples:" not in text or f"bcdi-recon {name}" not in (sub.epilog or ""):
            missing.append(f"{name}: no example")
        for action in sub._actions:
            if (not action.option_strings or action.required or action.dest == "traceback"
                    or isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction))):
                continue
            if "default" not in (action.help or "").lower():
                missing.append(f"{name} {action.option_strings[0]}: no default shown")
    assert missing == []


def test_device_defaults_to_auto_everywhere():
    subs = _subparsers()
    for name in ("phase", "reconstruct", "demo", "train"):
        (device,) = [a for a in subs[name]._actions if "--device" in a.option_strings]
        assert device.default == "auto", name
