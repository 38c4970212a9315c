//! `gatekeep hub`: the command around [`discord::hub::serve`]. One gateway
//! session for every run on this host, until Ctrl-C or SIGTERM.

use secrecy::{ExposeSecret, SecretString};

use crate::cli::HubArgs;
use crate::config::Verbosity;
use crate::console::Console;
use crate::exit::Code;
use crate::redact::Redactor;
use crate::signals::Signals;
use crate::transport::discord::{hub, session::Starter};

/// 0 after a clean stop, 2 without a token, 3 when no session can be had.
#[must_use]
pub fn run(args: &HubArgs, discord_token: Option<SecretString>) -> Code {
    let verbosity = if args.verbose > 0 {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let console = Console::plain(verbosity);
    let Some(token) = discord_token else {
        console.error("error: DISCORD_TOKEN is not set; the hub needs the bot's token");
        return Code::Usage;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            console.error(&format!("error: could not start the async runtime: {err}"));
            return Code::RunFailed;
        }
    };
    runtime.block_on(async {
        let mut signals = match Signals::install() {
            Ok(signals) => signals,
            Err(err) => {
                console.error(&format!("error: could not install signal handlers: {err}"));
                return Code::RunFailed;
            }
        };
        let redactor = Redactor::new(Vec::new()).with_secrets([token.expose_secret().to_owned()]);
        console.redact_with(redactor.clone());
        console.status("hub: connecting to Discord");
        let served = async {
            let starter = Starter::prepare(
                &args.api.discord_api_url,
                &token,
                args.session.identify_reserve,
                args.session.connect_timeout,
                redactor,
            )
            .await?;
            hub::serve(starter, &console, async {
                signals.recv().await;
            })
            .await
        };
        match served.await {
            Ok(()) => {
                console.status("hub: stopped");
                Code::Finished
            }
            Err(err) => {
                console.error(&format!("error: {err}"));
                Code::ChannelUnavailable
            }
        }
    })
}
