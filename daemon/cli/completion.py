"""``dropsync completion bash|zsh|fish``: a shell completion script made from the command table.

Install it with ``dropsync completion bash > ~/.local/share/bash-completion/completions/dropsync``
(or ``eval "$(dropsync completion bash)"`` in ``~/.bashrc``);
``dropsync completion zsh > "${fpath[1]}/_dropsync"`` (then ``compinit``);
``dropsync completion fish > ~/.config/fish/completions/dropsync.fish``. Each completes the
commands, every option of each command, the global options before or after the command,
the choices of an argument (``dead-letters list|retry|drop``) and file names where a
command takes files. Each is generated from the same parser the command line uses
(``cli.parser_walk``), so it lists exactly what ``dropsync`` accepts.
"""

from __future__ import annotations

import argparse

from .common import EXIT_OK, refuse_config
from .parser_walk import (
    Option,
    command_specs,
    split_actions,
    subcommands,
)

HELP = "print a shell completion script (bash, zsh or fish)"
SHELLS = ("bash", "zsh", "fish")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``SHELL``."""
    parser.add_argument("shell", choices=list(SHELLS), help="the shell to complete in")


def run(args: argparse.Namespace) -> int:
    """Print the script for ``args.shell``."""
    from .app import build_parser

    refuse_config(args, "completion", "the script is the same for every config")
    make = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}[args.shell]
    print(make(build_parser()), end="")
    return EXIT_OK


def _flags(options: list[Option], *, valued: bool | None = None, paths: bool = False) -> list[str]:
    return [
        flag
        for option in options
        if (valued is None or (option.metavar is not None) == valued)
        and (not paths or option.takes_path)
        for flag in option.flags
    ]


def bash_script(parser: argparse.ArgumentParser) -> str:
    """The bash completion function for ``parser`` (the whole ``dropsync`` parser)."""
    top, _ = split_actions(parser)
    top_valued = _flags(top, valued=True)
    valued = set(top_valued)
    paths = set(_flags(top, paths=True))
    cases = []
    for spec in command_specs(parser):
        options = list(spec.options)
        valued.update(_flags(options, valued=True))
        paths.update(_flags(options, paths=True))
        choices = [c for p in spec.positionals for c in p.choices]
        words = " ".join(sorted(set(_flags(options))) + choices)
        takes_files = any(p.takes_path for p in spec.positionals)
        files = ' _dropsync_files "$cur"' if takes_files else ""
        cases.append(
            f'        {spec.name}) COMPREPLY=($(compgen -W "{words}" -- "$cur"));{files} ;;'
        )
    top_words = " ".join([*subcommands(parser), *_flags(top)])
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


def _zsh_quote(text: str) -> str:
    """Text for inside single quotes in an ``_arguments`` spec (brackets and colons escaped)."""
    text = text.replace("'", "'\\''")
    for char in "[]:":
        text = text.replace(char, "\\" + char)
    return text


def _zsh_action(option: Option) -> str:
    if option.choices:
        return f"({' '.join(option.choices)})"
    return "_files" if option.takes_path else " "


def _zsh_specs(options: list[Option], positionals: list[Option]) -> list[str]:
    specs = []
    for option in options:
        described = _zsh_quote(option.help.split(". ")[0])
        for flag in option.flags:
            if option.metavar is None:
                specs.append(f"'{flag}[{described}]'")
            else:
                value = "::" if option.optional_value else ":"
                action = _zsh_action(option)
                specs.append(f"'{flag}[{described}]{value}{option.metavar}:{action}'")
    for position, positional in enumerate(positionals, 1):
        star = "*" if positional.takes_path else str(position)
        specs.append(f"'{star}:{_zsh_quote(positional.metavar or '')}:{_zsh_action(positional)}'")
    return specs


def zsh_script(parser: argparse.ArgumentParser) -> str:
    """The zsh completion function (``#compdef dropsync``) for ``parser``."""
    top, _ = split_actions(parser)
    specs = command_specs(parser)
    commands = "\n".join(f"        '{s.name}:{_zsh_quote(s.help)}'" for s in specs)
    cases = []
    for spec in specs:
        specs_of = _zsh_specs(list(spec.options), list(spec.positionals))
        lines = " \\\n                ".join(specs_of)
        cases.append(
            f"        {spec.name})\n            _arguments -s \\\n                {lines} ;;"
        )
    top_specs = " \\\n        ".join(_zsh_specs(top, []))
    return f"""#compdef dropsync
# zsh completion for dropsync (made by: dropsync completion zsh)
_dropsync_commands() {{
    local -a commands
    commands=(
{commands}
    )
    _describe -t commands 'dropsync command' commands
}}

_dropsync() {{
    local curcontext="$curcontext" state line
    typeset -A opt_args
    _arguments -C \\
        {top_specs} \\
        '1:command:_dropsync_commands' \\
        '*::argument:->argument'
    case $state in
    argument)
        curcontext="${{curcontext%:*:*}}:dropsync-$words[1]:"
        case $words[1] in
{chr(10).join(cases)}
        esac ;;
    esac
}}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _dropsync "$@"
else
    compdef _dropsync dropsync
fi
"""


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_option(option: Option, condition: str) -> list[str]:
    lines = []
    for flag in option.flags:
        parts = ["complete -c dropsync", f"-n {_fish_quote(condition)}"]
        parts.append(f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}")
        if option.metavar is not None:
            parts.append("-r" if not option.optional_value else "")
            if option.choices:
                parts.append(f"-f -a {_fish_quote(' '.join(option.choices))}")
            elif option.takes_path:
                parts.append("-F")
            else:
                parts.append("-f")
        if option.help:
            parts.append(f"-d {_fish_quote(option.help.split('. ')[0])}")
        lines.append(" ".join(p for p in parts if p))
    return lines


def fish_script(parser: argparse.ArgumentParser) -> str:
    """The fish completions (``complete -c dropsync ...``) for ``parser``."""
    top, _ = split_actions(parser)
    specs = command_specs(parser)
    names = " ".join(s.name for s in specs)
    lines = [
        "# fish completion for dropsync (made by: dropsync completion fish)",
        "complete -c dropsync -f",
    ]
    outside = f"not __fish_seen_subcommand_from {names}"
    for option in top:  # the global options are also each command's own (after it)
        lines += _fish_option(option, outside)
    for spec in specs:
        lines.append(
            f"complete -c dropsync -n {_fish_quote(outside)}"
            f" -a {spec.name} -d {_fish_quote(spec.help)}"
        )
        inside = f"__fish_seen_subcommand_from {spec.name}"
        for option in spec.options:
            lines += _fish_option(option, inside)
        for positional in spec.positionals:
            if positional.choices:
                lines.append(
                    f"complete -c dropsync -n {_fish_quote(inside)} -f "
                    f"-a {_fish_quote(' '.join(positional.choices))}"
                )
            elif positional.takes_path:
                lines.append(f"complete -c dropsync -n {_fish_quote(inside)} -F")
    return "\n".join(lines) + "\n"
