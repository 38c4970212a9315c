#!/bin/sh
# Regenerate the committed shell completion scripts from gatekeep's command
# line. Run after changing src/cli.rs; the test
# `committed_completions_match_the_command_line` fails until you do.
set -eu
cd "$(dirname "$0")/.."
for shell in bash zsh fish elvish powershell; do
    case $shell in
        bash) file=gatekeep.bash ;;
        zsh) file=_gatekeep ;;
        fish) file=gatekeep.fish ;;
        elvish) file=gatekeep.elv ;;
        powershell) file=_gatekeep.ps1 ;;
    esac
    cargo run -q -- completions "$shell" > "completions/$file"
done
