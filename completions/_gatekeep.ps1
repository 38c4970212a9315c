
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'gatekeep' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'gatekeep'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'gatekeep' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Run one OpenCode agent under supervision')
            [CompletionResult]::new('doctor', 'doctor', [CompletionResultType]::ParameterValue, 'Check that OpenCode, the workspace''s permission config and Discord are ready for an unattended run')
            [CompletionResult]::new('hub', 'hub', [CompletionResultType]::ParameterValue, 'Keep one Discord gateway session for every run on this host')
            [CompletionResult]::new('pending', 'pending', [CompletionResultType]::ParameterValue, 'List the pending requests of a live run, from another terminal')
            [CompletionResult]::new('approve', 'approve', [CompletionResultType]::ParameterValue, 'Approve pending request N of a live run, from another terminal')
            [CompletionResult]::new('deny', 'deny', [CompletionResultType]::ParameterValue, 'Deny pending request N of a live run, from another terminal')
            [CompletionResult]::new('audit', 'audit', [CompletionResultType]::ParameterValue, 'Work with an audit log written by `gatekeep run --audit-log`')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'gatekeep;run' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'The policy file: channel, approvers, timeouts, gates, deny and two-person rules kept in the repository (default: gatekeep.toml at the workspace root, if any). Flags and GATEKEEP_* variables override it')
            [CompletionResult]::new('--channel', '--channel', [CompletionResultType]::ParameterName, 'Discord channel id for approvals (needs DISCORD_TOKEN)')
            [CompletionResult]::new('--approver', '--approver', [CompletionResultType]::ParameterName, 'Discord user id allowed to decide (repeatable)')
            [CompletionResult]::new('--approver-role', '--approver-role', [CompletionResultType]::ParameterName, 'Discord role id whose members may decide (repeatable)')
            [CompletionResult]::new('--mention', '--mention', [CompletionResultType]::ParameterName, 'Whom to ping for each request, when that differs from who may approve (repeatable): a user id, or role:ROLE_ID. Default: the approvers and approver roles')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Time limit for the whole run, e.g. 90s, 10m, 1h30m')
            [CompletionResult]::new('--approval-timeout', '--approval-timeout', [CompletionResultType]::ParameterName, 'Time limit for each approval request; unanswered requests are denied')
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'Workspace directory (default: the current directory)')
            [CompletionResult]::new('--gate', '--gate', [CompletionResultType]::ParameterName, 'Permission kind forced to `ask` for this run, e.g. bash, edit, webfetch (repeatable)')
            [CompletionResult]::new('--deny', '--deny', [CompletionResultType]::ParameterName, 'Deny requests matching KIND:GLOB at once, without asking anyone, e.g. `bash:rm -rf *` (repeatable; `*` as KIND matches every kind). Wins over any approval rule')
            [CompletionResult]::new('--share', '--share', [CompletionResultType]::ParameterName, 'Share PATH read-write with the agent''s box, besides the workspace, OpenCode''s own directories and the usual caches (repeatable)')
            [CompletionResult]::new('--remind', '--remind', [CompletionResultType]::ParameterName, 'Remind the pinged people of a waiting request after this long (default: at half of its deadline, when that is at least 2 minutes)')
            [CompletionResult]::new('--identify-reserve', '--identify-reserve', [CompletionResultType]::ParameterName, 'Discord session starts never spent: below this many left for the day, no session is started (Discord resets the bot''s token when none are left)')
            [CompletionResult]::new('--connect-timeout', '--connect-timeout', [CompletionResultType]::ParameterName, 'How long connecting to Discord may take, waiting for this host''s turn to start a session included')
            [CompletionResult]::new('--discord-api-url', '--discord-api-url', [CompletionResultType]::ParameterName, 'Discord API base URL (for testing against a local fake)')
            [CompletionResult]::new('--summary-json', '--summary-json', [CompletionResultType]::ParameterName, 'Write a JSON summary of the run to FILE when it ends, however it ends (written atomically; relative to the current directory)')
            [CompletionResult]::new('--audit-log', '--audit-log', [CompletionResultType]::ParameterName, 'Append one hash-chained JSON line per decision, refused click and automatic denial to FILE; check it with `gatekeep audit verify FILE`')
            [CompletionResult]::new('--summary-md', '--summary-md', [CompletionResultType]::ParameterName, 'Write a Markdown report of the run to FILE when it ends (default: appended to $GITHUB_STEP_SUMMARY when that is set)')
            [CompletionResult]::new('--no-mention', '--no-mention', [CompletionResultType]::ParameterName, 'Ping nobody')
            [CompletionResult]::new('--no-questions', '--no-questions', [CompletionResultType]::ParameterName, 'Dismiss the agent''s questions (its `question` tool) at once instead of relaying them to the approval channel')
            [CompletionResult]::new('--isolate', '--isolate', [CompletionResultType]::ParameterName, 'The default, kept for old command lines: OpenCode and the agent''s tools run in a box (bubblewrap, Linux) where they reach nothing that approves, persists or escapes (README, "The agent''s box")')
            [CompletionResult]::new('--no-isolate', '--no-isolate', [CompletionResultType]::ParameterName, 'Run OpenCode outside the agent''s box. The terminal prompt and `gatekeep approve` are then not protected from a hostile agent (Discord approvals still are); announced in the run-start message, the summary and `doctor`. A flag only, never a variable or a policy key, so nothing the agent can write turns the box off')
            [CompletionResult]::new('--accept-policy-changes', '--accept-policy-changes', [CompletionResultType]::ParameterName, 'Run although the policy surface (gatekeep.toml, opencode.json[c], .opencode/, OpenCode''s global config) has uncommitted changes, or a run before changed it without an approval: your word that you looked. Clears that record; announced in the run-start message and summary')
            [CompletionResult]::new('--no-hub', '--no-hub', [CompletionResultType]::ParameterName, 'Never use this host''s `gatekeep hub`: open a gateway session of the run''s own')
            [CompletionResult]::new('--no-bell', '--no-bell', [CompletionResultType]::ParameterName, 'Do not ring the terminal bell when a request starts waiting')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only the agent''s text and errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only the agent''s text and errors')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Print more about what gatekeep is doing (repeat for more)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Print more about what gatekeep is doing (repeat for more)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'gatekeep;doctor' {
            [CompletionResult]::new('--channel', '--channel', [CompletionResultType]::ParameterName, 'Discord channel id to check (needs `DISCORD_TOKEN`)')
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'Workspace directory whose OpenCode config is checked (default: the current directory)')
            [CompletionResult]::new('--gate', '--gate', [CompletionResultType]::ParameterName, 'Permission kind the run will force to `ask` with --gate (repeatable)')
            [CompletionResult]::new('--discord-api-url', '--discord-api-url', [CompletionResultType]::ParameterName, 'Discord API base URL (for testing against a local fake)')
            [CompletionResult]::new('--approver', '--approver', [CompletionResultType]::ParameterName, 'Discord user id allowed to decide (repeatable)')
            [CompletionResult]::new('--approver-role', '--approver-role', [CompletionResultType]::ParameterName, 'Discord role id whose members may decide (repeatable)')
            [CompletionResult]::new('--mention', '--mention', [CompletionResultType]::ParameterName, 'Whom to ping for each request, when that differs from who may approve (repeatable): a user id, or role:ROLE_ID. Default: the approvers and approver roles')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'The policy file (default: gatekeep.toml at the workspace root, if any)')
            [CompletionResult]::new('--no-mention', '--no-mention', [CompletionResultType]::ParameterName, 'Ping nobody')
            [CompletionResult]::new('--no-isolate', '--no-isolate', [CompletionResultType]::ParameterName, 'Check a run with --no-isolate: say what is then unprotected')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'gatekeep;hub' {
            [CompletionResult]::new('--discord-api-url', '--discord-api-url', [CompletionResultType]::ParameterName, 'Discord API base URL (for testing against a local fake)')
            [CompletionResult]::new('--identify-reserve', '--identify-reserve', [CompletionResultType]::ParameterName, 'Discord session starts never spent: below this many left for the day, no session is started (Discord resets the bot''s token when none are left)')
            [CompletionResult]::new('--connect-timeout', '--connect-timeout', [CompletionResultType]::ParameterName, 'How long connecting to Discord may take, waiting for this host''s turn to start a session included')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Print more about what the hub is doing')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Print more about what the hub is doing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'gatekeep;pending' {
            [CompletionResult]::new('--run', '--run', [CompletionResultType]::ParameterName, 'The run''s id (needed when several runs are live)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'gatekeep;approve' {
            [CompletionResult]::new('--run', '--run', [CompletionResultType]::ParameterName, 'The run''s id (needed when several runs are live)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'gatekeep;deny' {
            [CompletionResult]::new('--reason', '--reason', [CompletionResultType]::ParameterName, 'Feedback the model receives with the denial')
            [CompletionResult]::new('--run', '--run', [CompletionResultType]::ParameterName, 'The run''s id (needed when several runs are live)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'gatekeep;audit' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Check an audit log''s hash chain; say where it breaks')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'gatekeep;audit;verify' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'gatekeep;audit;help' {
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Check an audit log''s hash chain; say where it breaks')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'gatekeep;audit;help;verify' {
            break
        }
        'gatekeep;audit;help;help' {
            break
        }
        'gatekeep;completions' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'gatekeep;help' {
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Run one OpenCode agent under supervision')
            [CompletionResult]::new('doctor', 'doctor', [CompletionResultType]::ParameterValue, 'Check that OpenCode, the workspace''s permission config and Discord are ready for an unattended run')
            [CompletionResult]::new('hub', 'hub', [CompletionResultType]::ParameterValue, 'Keep one Discord gateway session for every run on this host')
            [CompletionResult]::new('pending', 'pending', [CompletionResultType]::ParameterValue, 'List the pending requests of a live run, from another terminal')
            [CompletionResult]::new('approve', 'approve', [CompletionResultType]::ParameterValue, 'Approve pending request N of a live run, from another terminal')
            [CompletionResult]::new('deny', 'deny', [CompletionResultType]::ParameterValue, 'Deny pending request N of a live run, from another terminal')
            [CompletionResult]::new('audit', 'audit', [CompletionResultType]::ParameterValue, 'Work with an audit log written by `gatekeep run --audit-log`')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'gatekeep;help;run' {
            break
        }
        'gatekeep;help;doctor' {
            break
        }
        'gatekeep;help;hub' {
            break
        }
        'gatekeep;help;pending' {
            break
        }
        'gatekeep;help;approve' {
            break
        }
        'gatekeep;help;deny' {
            break
        }
        'gatekeep;help;audit' {
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Check an audit log''s hash chain; say where it breaks')
            break
        }
        'gatekeep;help;audit;verify' {
            break
        }
        'gatekeep;help;completions' {
            break
        }
        'gatekeep;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
