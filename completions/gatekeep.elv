
use builtin;
use str;

set edit:completion:arg-completer[gatekeep] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'gatekeep'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'gatekeep'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand run 'Run one OpenCode agent under supervision'
            cand doctor 'Check that OpenCode, the workspace''s permission config and Discord are ready for an unattended run'
            cand hub 'Keep one Discord gateway session for every run on this host'
            cand pending 'List the pending requests of a live run, from another terminal'
            cand approve 'Approve pending request N of a live run, from another terminal'
            cand deny 'Deny pending request N of a live run, from another terminal'
            cand audit 'Work with an audit log written by `gatekeep run --audit-log`'
            cand completions 'Print a shell completion script'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'gatekeep;run'= {
            cand --config 'The policy file: channel, approvers, timeouts, gates, deny and two-person rules kept in the repository (default: gatekeep.toml at the workspace root, if any). Flags and GATEKEEP_* variables override it'
            cand --channel 'Discord channel id for approvals (needs DISCORD_TOKEN)'
            cand --approver 'Discord user id allowed to decide (repeatable)'
            cand --approver-role 'Discord role id whose members may decide (repeatable)'
            cand --mention 'Whom to ping for each request, when that differs from who may approve (repeatable): a user id, or role:ROLE_ID. Default: the approvers and approver roles'
            cand --timeout 'Time limit for the whole run, e.g. 90s, 10m, 1h30m'
            cand --approval-timeout 'Time limit for each approval request; unanswered requests are denied'
            cand --dir 'Workspace directory (default: the current directory)'
            cand --gate 'Permission kind forced to `ask` for this run, e.g. bash, edit, webfetch (repeatable)'
            cand --deny 'Deny requests matching KIND:GLOB at once, without asking anyone, e.g. `bash:rm -rf *` (repeatable; `*` as KIND matches every kind). Wins over any approval rule'
            cand --share 'Share PATH read-write with the agent''s box, besides the workspace, OpenCode''s own directories and the usual caches (repeatable)'
            cand --remind 'Remind the pinged people of a waiting request after this long (default: at half of its deadline, when that is at least 2 minutes)'
            cand --identify-reserve 'Discord session starts never spent: below this many left for the day, no session is started (Discord resets the bot''s token when none are left)'
            cand --connect-timeout 'How long connecting to Discord may take, waiting for this host''s turn to start a session included'
            cand --discord-api-url 'Discord API base URL (for testing against a local fake)'
            cand --summary-json 'Write a JSON summary of the run to FILE when it ends, however it ends (written atomically; relative to the current directory)'
            cand --audit-log 'Append one hash-chained JSON line per decision, refused click and automatic denial to FILE; check it with `gatekeep audit verify FILE`'
            cand --summary-md 'Write a Markdown report of the run to FILE when it ends (default: appended to $GITHUB_STEP_SUMMARY when that is set)'
            cand --no-mention 'Ping nobody'
            cand --no-questions 'Dismiss the agent''s questions (its `question` tool) at once instead of relaying them to the approval channel'
            cand --isolate 'The default, kept for old command lines: OpenCode and the agent''s tools run in a box (bubblewrap, Linux) where they reach nothing that approves, persists or escapes (README, "The agent''s box")'
            cand --no-isolate 'Run OpenCode outside the agent''s box. The terminal prompt and `gatekeep approve` are then not protected from a hostile agent (Discord approvals still are); announced in the run-start message, the summary and `doctor`. A flag only, never a variable or a policy key, so nothing the agent can write turns the box off'
            cand --accept-policy-changes 'Run although the policy surface (gatekeep.toml, opencode.json[c], .opencode/, OpenCode''s global config) has uncommitted changes, or a run before changed it without an approval: your word that you looked. Clears that record; announced in the run-start message and summary'
            cand --no-hub 'Never use this host''s `gatekeep hub`: open a gateway session of the run''s own'
            cand --no-bell 'Do not ring the terminal bell when a request starts waiting'
            cand -q 'Print only the agent''s text and errors'
            cand --quiet 'Print only the agent''s text and errors'
            cand -v 'Print more about what gatekeep is doing (repeat for more)'
            cand --verbose 'Print more about what gatekeep is doing (repeat for more)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'gatekeep;doctor'= {
            cand --channel 'Discord channel id to check (needs `DISCORD_TOKEN`)'
            cand --dir 'Workspace directory whose OpenCode config is checked (default: the current directory)'
            cand --gate 'Permission kind the run will force to `ask` with --gate (repeatable)'
            cand --discord-api-url 'Discord API base URL (for testing against a local fake)'
            cand --approver 'Discord user id allowed to decide (repeatable)'
            cand --approver-role 'Discord role id whose members may decide (repeatable)'
            cand --mention 'Whom to ping for each request, when that differs from who may approve (repeatable): a user id, or role:ROLE_ID. Default: the approvers and approver roles'
            cand --config 'The policy file (default: gatekeep.toml at the workspace root, if any)'
            cand --no-mention 'Ping nobody'
            cand --no-isolate 'Check a run with --no-isolate: say what is then unprotected'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'gatekeep;hub'= {
            cand --discord-api-url 'Discord API base URL (for testing against a local fake)'
            cand --identify-reserve 'Discord session starts never spent: below this many left for the day, no session is started (Discord resets the bot''s token when none are left)'
            cand --connect-timeout 'How long connecting to Discord may take, waiting for this host''s turn to start a session included'
            cand -v 'Print more about what the hub is doing'
            cand --verbose 'Print more about what the hub is doing'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'gatekeep;pending'= {
            cand --run 'The run''s id (needed when several runs are live)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'gatekeep;approve'= {
            cand --run 'The run''s id (needed when several runs are live)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'gatekeep;deny'= {
            cand --reason 'Feedback the model receives with the denial'
            cand --run 'The run''s id (needed when several runs are live)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'gatekeep;audit'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand verify 'Check an audit log''s hash chain; say where it breaks'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'gatekeep;audit;verify'= {
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'gatekeep;audit;help'= {
            cand verify 'Check an audit log''s hash chain; say where it breaks'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'gatekeep;audit;help;verify'= {
        }
        &'gatekeep;audit;help;help'= {
        }
        &'gatekeep;completions'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'gatekeep;help'= {
            cand run 'Run one OpenCode agent under supervision'
            cand doctor 'Check that OpenCode, the workspace''s permission config and Discord are ready for an unattended run'
            cand hub 'Keep one Discord gateway session for every run on this host'
            cand pending 'List the pending requests of a live run, from another terminal'
            cand approve 'Approve pending request N of a live run, from another terminal'
            cand deny 'Deny pending request N of a live run, from another terminal'
            cand audit 'Work with an audit log written by `gatekeep run --audit-log`'
            cand completions 'Print a shell completion script'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'gatekeep;help;run'= {
        }
        &'gatekeep;help;doctor'= {
        }
        &'gatekeep;help;hub'= {
        }
        &'gatekeep;help;pending'= {
        }
        &'gatekeep;help;approve'= {
        }
        &'gatekeep;help;deny'= {
        }
        &'gatekeep;help;audit'= {
            cand verify 'Check an audit log''s hash chain; say where it breaks'
        }
        &'gatekeep;help;audit;verify'= {
        }
        &'gatekeep;help;completions'= {
        }
        &'gatekeep;help;help'= {
        }
    ]
    $completions[$command]
}
