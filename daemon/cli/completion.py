"""``dropsync completion bash``: a shell completion script made from the command table.

Install it with ``dropsync completion bash > ~/.local/share/bash-completion/completions/dropsync``
(or ``eval "$(dropsync completion bash)"`` in ``~/.bashrc``). It completes the
commands, every option of each command, the global options before or after the
command, the choices of an argument (``dead-letters list|retry|drop``) and file
names where a command takes files. It is generated from the same parser the
command line uses, so it lists exactly what ``dropsync`` accepts.
"""

from __future__ import annotations

import argparse

from dropsync.daemon.cli.common import EXIT_OK, refuse_config

HELP = "print a shell completion script (bash)"

# Arguments whose values are paths: completed as file names.
_PATH_METAVARS = frozenset({"FILE", "DIR"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``SHELL``."""
    parser.add_argument("shell", choices=["bash"], help="the shell to complete in")


def run(args: argparse.Namespace) -> int:
    """Print the script for ``args.shell``."""
    from dropsync.daemon.cli.app import build_parser

    refuse_config(args, "completion", "the script is the same for every config")
    print(bash_script(build_parser()), end="")
    return EXIT_OK


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _words(parser: argparse.ArgumentParser) -> tuple[list[str], list[str], list[str], bool]:
    """(options, options taking a value, options taking a path, positional takes paths)."""
    options: list[str] = []
    valued: list[str] = []
    paths: list[str] = []
    positional_paths = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            options += action.option_strings
            if action.nargs != 0:
                valued += action.option_strings
                if action.metavar in _PATH_METAVARS:
                    paths += action.option_strings
        elif action.metavar in _PATH_METAVARS:
            positional_paths = True
    return options, valued, paths, positional_paths


def _choices(parser: argparse.ArgumentParser) -> list[str]:
    return [
        str(choice)
        for action in parser._actions
        if not action.option_strings and action.choices is not None
        for choice in action.choices
        if not isinstance(action, argparse._SubParsersAction)
    ]


def bash_script(parser: argparse.ArgumentParser) -> str:
    """The bash completion function for ``parser`` (the whole ``dropsync`` parser)."""
    top_options, top_valued, top_paths, _ = _words(parser)
    commands = _subcommands(parser)
    valued = set(top_valued)
    paths = set(top_paths)
    cases = []
    for name, sub in commands.items():
        options, sub_valued, sub_paths, positional_paths = _words(sub)
        valued.update(sub_valued)
        paths.update(sub_paths)
        words = " ".join(sorted(set(options)) + _choices(sub))
        files = ' _dropsync_files "$cur"' if positional_paths else ""
        cases.append(f'        {name}) COMPREPLY=($(compgen -W "{words}" -- "$cur"));{files} ;;')
    top_words = " ".join([*commands, *top_options])
    return f"""# bash completion for dropsync (made by: dropsync completion bash)
_dropsync_files() {{
    compopt -o filenames 2>/dev/null
    COMPREPLY+=($(compgen -f -- "$1"))
}}
_dropsync() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local command="" i
    case "$prev" in
        {"|".join(sorted(paths)) or "--"}) COMPREPLY=(); _dropsync_files "$cur"; return ;;
        {"|".join(sorted(valued - paths)) or "--"}) COMPREPLY=(); return ;;
    esac
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            {"|".join(sorted(top_valued)) or "--"}) ((i++)) ;;
            -*) ;;
            *) command="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    case "$command" in
        "") COMPREPLY=($(compgen -W "{top_words}" -- "$cur")) ;;
{chr(10).join(cases)}
    esac
}}
complete -F _dropsync dropsync
"""
