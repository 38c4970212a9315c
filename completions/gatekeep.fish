# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_gatekeep_global_optspecs
    string join \n h/help V/version
end

function __fish_gatekeep_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_gatekeep_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_gatekeep_using_subcommand
    set -l cmd (__fish_gatekeep_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c gatekeep -n "__fish_gatekeep_needs_command" -s h -l help -d 'Print help'
complete -c gatekeep -n "__fish_gatekeep_needs_command" -s V -l version -d 'Print version'
complete -c gatekeep -n "__fish_gatekeep_needs_command" -f -a "run" -d 'Run one OpenCode agent under supervision'
complete -c gatekeep -n "__fish_gatekeep_needs_command" -f -a "doctor" -d 'Check that OpenCode, the workspace\'s permission config and Discord are ready for an unattended run'
complete -c gatekeep -n "__fish_gatekeep_needs_command" -f -a "hub" -d 'Keep one Discord gateway session for every run on this host'
complete -c gatekeep -n "__fish_gatekeep_needs_command" -f -a "pending" -d 'List the pending requests of a live run, from another terminal'
complete -c gatekeep -n "__fish_gatekeep_needs_command" -f -a "approve" -d 'Approve pending request N of a live run, from another terminal'
complete -c gatekeep -n "__fish_gatekeep_needs_command" -f -a "deny" -d 'Deny pending request N of a live run, from another terminal'
complete -c gatekeep -n "__fish_gatekeep_needs_command" -f -a "audit" -d 'Work with an audit log written by `gatekeep run --audit-log`'
complete -c gatekeep -n "__fish_gatekeep_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c gatekeep -n "__fish_gatekeep_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l config -d 'The policy file: channel, approvers, timeouts, gates, deny and two-person rules kept in the repository (default: gatekeep.toml at the workspace root, if any). Flags and GATEKEEP_* variables override it' -r -F
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l channel -d 'Discord channel id for approvals (needs DISCORD_TOKEN)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l approver -d 'Discord user id allowed to decide (repeatable)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l approver-role -d 'Discord role id whose members may decide (repeatable)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l mention -d 'Whom to ping for each request, when that differs from who may approve (repeatable): a user id, or role:ROLE_ID. Default: the approvers and approver roles' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l timeout -d 'Time limit for the whole run, e.g. 90s, 10m, 1h30m' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l approval-timeout -d 'Time limit for each approval request; unanswered requests are denied' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l dir -d 'Workspace directory (default: the current directory)' -r -F
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l gate -d 'Permission kind forced to `ask` for this run, e.g. bash, edit, webfetch (repeatable)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l deny -d 'Deny requests matching KIND:GLOB at once, without asking anyone, e.g. `bash:rm -rf *` (repeatable; `*` as KIND matches every kind). Wins over any approval rule' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l share -d 'Share PATH read-write with the agent\'s box, besides the workspace, OpenCode\'s own directories and the usual caches (repeatable)' -r -F
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l remind -d 'Remind the pinged people of a waiting request after this long (default: at half of its deadline, when that is at least 2 minutes)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l identify-reserve -d 'Discord session starts never spent: below this many left for the day, no session is started (Discord resets the bot\'s token when none are left)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l connect-timeout -d 'How long connecting to Discord may take, waiting for this host\'s turn to start a session included' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l discord-api-url -d 'Discord API base URL (for testing against a local fake)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l summary-json -d 'Write a JSON summary of the run to FILE when it ends, however it ends (written atomically; relative to the current directory)' -r -F
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l audit-log -d 'Append one hash-chained JSON line per decision, refused click and automatic denial to FILE; check it with `gatekeep audit verify FILE`' -r -F
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l summary-md -d 'Write a Markdown report of the run to FILE when it ends (default: appended to $GITHUB_STEP_SUMMARY when that is set)' -r -F
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l no-mention -d 'Ping nobody'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l no-questions -d 'Dismiss the agent\'s questions (its `question` tool) at once instead of relaying them to the approval channel'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l isolate -d 'The default, kept for old command lines: OpenCode and the agent\'s tools run in a box (bubblewrap, Linux) where they reach nothing that approves, persists or escapes (README, "The agent\'s box")'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l no-isolate -d 'Run OpenCode outside the agent\'s box. The terminal prompt and `gatekeep approve` are then not protected from a hostile agent (Discord approvals still are); announced in the run-start message, the summary and `doctor`. A flag only, never a variable or a policy key, so nothing the agent can write turns the box off'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l accept-policy-changes -d 'Run although the policy surface (gatekeep.toml, opencode.json[c], .opencode/, OpenCode\'s global config) has uncommitted changes, or a run before changed it without an approval: your word that you looked. Clears that record; announced in the run-start message and summary'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l no-hub -d 'Never use this host\'s `gatekeep hub`: open a gateway session of the run\'s own'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -l no-bell -d 'Do not ring the terminal bell when a request starts waiting'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -s q -l quiet -d 'Print only the agent\'s text and errors'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -s v -l verbose -d 'Print more about what gatekeep is doing (repeat for more)'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand run" -s V -l version -d 'Print version'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand doctor" -l channel -d 'Discord channel id to check (needs `DISCORD_TOKEN`)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand doctor" -l dir -d 'Workspace directory whose OpenCode config is checked (default: the current directory)' -r -F
complete -c gatekeep -n "__fish_gatekeep_using_subcommand doctor" -l gate -d 'Permission kind the run will force to `ask` with --gate (repeatable)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand doctor" -l discord-api-url -d 'Discord API base URL (for testing against a local fake)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand doctor" -l approver -d 'Discord user id allowed to decide (repeatable)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand doctor" -l approver-role -d 'Discord role id whose members may decide (repeatable)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand doctor" -l mention -d 'Whom to ping for each request, when that differs from who may approve (repeatable): a user id, or role:ROLE_ID. Default: the approvers and approver roles' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand doctor" -l config -d 'The policy file (default: gatekeep.toml at the workspace root, if any)' -r -F
complete -c gatekeep -n "__fish_gatekeep_using_subcommand doctor" -l no-mention -d 'Ping nobody'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand doctor" -l no-isolate -d 'Check a run with --no-isolate: say what is then unprotected'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand doctor" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand doctor" -s V -l version -d 'Print version'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand hub" -l discord-api-url -d 'Discord API base URL (for testing against a local fake)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand hub" -l identify-reserve -d 'Discord session starts never spent: below this many left for the day, no session is started (Discord resets the bot\'s token when none are left)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand hub" -l connect-timeout -d 'How long connecting to Discord may take, waiting for this host\'s turn to start a session included' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand hub" -s v -l verbose -d 'Print more about what the hub is doing'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand hub" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand hub" -s V -l version -d 'Print version'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand pending" -l run -d 'The run\'s id (needed when several runs are live)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand pending" -s h -l help -d 'Print help'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand pending" -s V -l version -d 'Print version'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand approve" -l run -d 'The run\'s id (needed when several runs are live)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand approve" -s h -l help -d 'Print help'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand approve" -s V -l version -d 'Print version'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand deny" -l reason -d 'Feedback the model receives with the denial' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand deny" -l run -d 'The run\'s id (needed when several runs are live)' -r
complete -c gatekeep -n "__fish_gatekeep_using_subcommand deny" -s h -l help -d 'Print help'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand deny" -s V -l version -d 'Print version'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand audit; and not __fish_seen_subcommand_from verify help" -s h -l help -d 'Print help'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand audit; and not __fish_seen_subcommand_from verify help" -s V -l version -d 'Print version'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand audit; and not __fish_seen_subcommand_from verify help" -f -a "verify" -d 'Check an audit log\'s hash chain; say where it breaks'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand audit; and not __fish_seen_subcommand_from verify help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand audit; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand audit; and __fish_seen_subcommand_from verify" -s V -l version -d 'Print version'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Check an audit log\'s hash chain; say where it breaks'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand completions" -s h -l help -d 'Print help'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand completions" -s V -l version -d 'Print version'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand help; and not __fish_seen_subcommand_from run doctor hub pending approve deny audit completions help" -f -a "run" -d 'Run one OpenCode agent under supervision'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand help; and not __fish_seen_subcommand_from run doctor hub pending approve deny audit completions help" -f -a "doctor" -d 'Check that OpenCode, the workspace\'s permission config and Discord are ready for an unattended run'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand help; and not __fish_seen_subcommand_from run doctor hub pending approve deny audit completions help" -f -a "hub" -d 'Keep one Discord gateway session for every run on this host'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand help; and not __fish_seen_subcommand_from run doctor hub pending approve deny audit completions help" -f -a "pending" -d 'List the pending requests of a live run, from another terminal'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand help; and not __fish_seen_subcommand_from run doctor hub pending approve deny audit completions help" -f -a "approve" -d 'Approve pending request N of a live run, from another terminal'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand help; and not __fish_seen_subcommand_from run doctor hub pending approve deny audit completions help" -f -a "deny" -d 'Deny pending request N of a live run, from another terminal'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand help; and not __fish_seen_subcommand_from run doctor hub pending approve deny audit completions help" -f -a "audit" -d 'Work with an audit log written by `gatekeep run --audit-log`'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand help; and not __fish_seen_subcommand_from run doctor hub pending approve deny audit completions help" -f -a "completions" -d 'Print a shell completion script'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand help; and not __fish_seen_subcommand_from run doctor hub pending approve deny audit completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gatekeep -n "__fish_gatekeep_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "verify" -d 'Check an audit log\'s hash chain; say where it breaks'
