//! Button and modal ids, and who may press them.
//!
//! Several gatekeep processes may share one bot token, and every one of them
//! receives every click over the gateway. The `custom_id` of each component
//! therefore carries a random per-run nonce: a click without this run's
//! nonce belongs to someone else and is neither acknowledged nor acted on.
//! Pure functions only; the click handler in `mod.rs` does the I/O.

use std::fmt;

use rand::Rng;

/// Prefix and version of gatekeep's component ids.
const PREFIX: &str = "gk1";

/// What a component asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Approve,
    /// Approve, and approve the same exact request again for the rest of
    /// this run (`Verdict::ApproveAndTrust`).
    ApproveAndTrust,
    Deny,
    /// Open the "deny with reason" modal.
    DenyWithReason,
    /// The submitted "deny with reason" modal.
    ReasonSubmitted,
    /// Group message (the number is the group's id): approve the requests
    /// chosen in the select menu.
    ApproveSelected,
    /// Group message: deny the chosen requests.
    DenySelected,
    /// Group message: approve every open request of the group.
    ApproveAll,
    /// Group message: deny every open request of the group.
    DenyAll,
}

impl Action {
    fn code(self) -> char {
        match self {
            Action::Approve => 'a',
            Action::ApproveAndTrust => 't',
            Action::Deny => 'd',
            Action::DenyWithReason => 'r',
            Action::ReasonSubmitted => 'm',
            Action::ApproveSelected => 'A',
            Action::DenySelected => 'D',
            Action::ApproveAll => 'Y',
            Action::DenyAll => 'N',
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "a" => Action::Approve,
            "t" => Action::ApproveAndTrust,
            "d" => Action::Deny,
            "r" => Action::DenyWithReason,
            "m" => Action::ReasonSubmitted,
            "A" => Action::ApproveSelected,
            "D" => Action::DenySelected,
            "Y" => Action::ApproveAll,
            "N" => Action::DenyAll,
            _ => return None,
        })
    }
}

/// A run's nonce: 16 hex digits from the OS-seeded thread RNG, so two runs
/// sharing a token never collide in practice.
#[derive(Clone, PartialEq, Eq)]
pub struct Nonce(String);

impl Nonce {
    #[must_use]
    pub fn random() -> Self {
        let value: u64 = rand::thread_rng().gen();
        Self(format!("{value:016x}"))
    }

    /// A fixed nonce, for tests and snapshots.
    #[must_use]
    pub fn fixed(value: &str) -> Self {
        Self(value.to_owned())
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", self.0)
    }
}

/// The `custom_id` for `action` on request `number` in the run with `nonce`
/// (at most 4 + 17 + 11 + 2 characters: far below Discord's 100).
#[must_use]
pub fn encode(nonce: &Nonce, number: u32, action: Action) -> String {
    format!("{PREFIX}:{}:{number}:{}", nonce.0, action.code())
}

/// The request number and action of a `custom_id`, or `None` when it is not
/// one of this run's (other run, other bot feature, malformed).
#[must_use]
pub fn decode(nonce: &Nonce, custom_id: &str) -> Option<(u32, Action)> {
    let mut parts = custom_id.split(':');
    if parts.next()? != PREFIX || parts.next()? != nonce.0 {
        return None;
    }
    let digits = parts.next()?;
    // Exactly the spelling `encode` produces: `u32::from_str` also takes
    // `+7` and `007`, and a forged id must not have spellings of its own.
    let canonical =
        digits.bytes().all(|b| b.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    let number = digits.parse().ok()?;
    let action = Action::from_code(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    Some((number, action))
}

/// Discord's Manage Channels permission bit.
pub const MANAGE_CHANNELS: u64 = 1 << 4;
/// Discord's Administrator bit, which implies every permission.
pub const ADMINISTRATOR: u64 = 1 << 3;

/// Who may answer requests, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Approvers {
    pub users: Vec<u64>,
    pub roles: Vec<u64>,
}

/// The parts of a click that authorization looks at, taken from the
/// interaction payload (Discord computes `permissions` for the channel,
/// overwrites included, so no REST call is needed).
#[derive(Debug, Clone)]
pub struct Clicker {
    pub user_id: u64,
    /// `None` when the click did not come from a guild member (a DM).
    pub roles: Option<Vec<u64>>,
    pub permissions: Option<u64>,
    pub channel_id: u64,
}

/// Why a click is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not from this run's thread.
    WrongChannel,
    /// Not in the approver lists (or lacking Manage Channels).
    NotApprover,
}

/// Whether `clicker` may answer requests of the run whose thread is
/// `thread_id`. With neither approver users nor roles configured, Manage
/// Channels in the thread is what makes an approver.
pub fn authorize(approvers: &Approvers, thread_id: u64, clicker: &Clicker) -> Result<(), Refusal> {
    if clicker.channel_id != thread_id {
        return Err(Refusal::WrongChannel);
    }
    let Some(roles) = &clicker.roles else {
        return Err(Refusal::NotApprover);
    };
    let allowed = if approvers.users.is_empty() && approvers.roles.is_empty() {
        clicker
            .permissions
            .is_some_and(|p| p & (MANAGE_CHANNELS | ADMINISTRATOR) != 0)
    } else {
        approvers.users.contains(&clicker.user_id)
            || roles.iter().any(|r| approvers.roles.contains(r))
    };
    if allowed {
        Ok(())
    } else {
        Err(Refusal::NotApprover)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_foreign_ids() {
        let nonce = Nonce::fixed("00112233aabbccdd");
        for action in [
            Action::ApproveSelected,
            Action::DenySelected,
            Action::ApproveAll,
            Action::DenyAll,
            Action::Approve,
            Action::ApproveAndTrust,
            Action::Deny,
            Action::DenyWithReason,
            Action::ReasonSubmitted,
        ] {
            let id = encode(&nonce, 42, action);
            assert!(id.len() <= 100);
            assert_eq!(decode(&nonce, &id), Some((42, action)));
        }
        let other = Nonce::fixed("ffffffffffffffff");
        assert_eq!(decode(&other, &encode(&nonce, 1, Action::Approve)), None);
        assert_eq!(decode(&nonce, "gk1:00112233aabbccdd:1:a:extra"), None);
        assert_eq!(decode(&nonce, "gk1:00112233aabbccdd:x:a"), None);
        assert_eq!(decode(&nonce, "gk1:00112233aabbccdd:1:z"), None);
        assert_eq!(decode(&nonce, "something-else"), None);
    }

    #[test]
    fn random_nonces_differ() {
        assert_ne!(Nonce::random(), Nonce::random());
        assert_eq!(Nonce::random().as_str().len(), 16);
    }

    fn clicker(user_id: u64, roles: &[u64], permissions: u64, channel_id: u64) -> Clicker {
        Clicker {
            user_id,
            roles: Some(roles.to_vec()),
            permissions: Some(permissions),
            channel_id,
        }
    }

    #[test]
    fn approver_lists() {
        let approvers = Approvers {
            users: vec![7],
            roles: vec![70],
        };
        assert_eq!(authorize(&approvers, 1, &clicker(7, &[], 0, 1)), Ok(()));
        assert_eq!(authorize(&approvers, 1, &clicker(8, &[70], 0, 1)), Ok(()));
        // Manage Channels does not count once lists are given.
        assert_eq!(
            authorize(&approvers, 1, &clicker(8, &[71], MANAGE_CHANNELS, 1)),
            Err(Refusal::NotApprover)
        );
        assert_eq!(
            authorize(&approvers, 1, &clicker(7, &[], 0, 2)),
            Err(Refusal::WrongChannel)
        );
    }

    #[test]
    fn manage_channels_when_no_lists() {
        let approvers = Approvers::default();
        assert_eq!(
            authorize(&approvers, 1, &clicker(8, &[], MANAGE_CHANNELS | 1, 1)),
            Ok(())
        );
        assert_eq!(
            authorize(&approvers, 1, &clicker(8, &[], ADMINISTRATOR, 1)),
            Ok(())
        );
        assert_eq!(
            authorize(&approvers, 1, &clicker(8, &[], 1 << 11, 1)),
            Err(Refusal::NotApprover)
        );
        let dm = Clicker {
            user_id: 8,
            roles: None,
            permissions: Some(MANAGE_CHANNELS),
            channel_id: 1,
        };
        assert_eq!(authorize(&approvers, 1, &dm), Err(Refusal::NotApprover));
    }
}

/// Forged `custom_id`s: whatever a click carries, decoding never panics,
/// never accepts another run's nonce, and this run's ids round-trip.
#[cfg(test)]
mod prop_tests {
    use proptest::prelude::*;

    use super::*;

    const ACTIONS: &[Action] = &[
        Action::Approve,
        Action::ApproveAndTrust,
        Action::Deny,
        Action::DenyWithReason,
        Action::ReasonSubmitted,
        Action::ApproveSelected,
        Action::DenySelected,
        Action::ApproveAll,
        Action::DenyAll,
    ];

    fn nonce() -> impl Strategy<Value = Nonce> {
        "[0-9a-f]{16}".prop_map(|s| Nonce::fixed(&s))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn own_ids_round_trip_and_fit_discord(
            nonce in nonce(),
            number in any::<u32>(),
            action in prop::sample::select(ACTIONS),
        ) {
            let id = encode(&nonce, number, action);
            prop_assert!(!id.is_empty() && id.chars().count() <= 100, "{id}");
            prop_assert_eq!(decode(&nonce, &id), Some((number, action)));
        }

        /// Another run's ids (any other nonce, however similar) are never
        /// ours, with any suffix or prefix an attacker adds.
        #[test]
        fn another_runs_nonce_is_never_accepted(
            ours in nonce(),
            theirs in prop_oneof!["[0-9a-f]{16}", "[0-9a-fA-F]{0,20}", ".{0,20}"],
            number in any::<u32>(),
            action in prop::sample::select(ACTIONS),
            suffix in prop_oneof![Just(String::new()), ".{0,8}"],
        ) {
            prop_assume!(theirs != ours.as_str());
            let forged = format!("{}{suffix}", encode(&Nonce::fixed(&theirs), number, action));
            prop_assert_eq!(decode(&ours, &forged), None);
        }

        /// Any text at all: no panic, and whatever is accepted carries
        /// exactly this run's prefix and nonce and re-encodes to itself
        /// (no alternative spellings: `+1`, `01`, spaces, extra parts).
        #[test]
        fn any_text_is_rejected_or_canonical(
            nonce in nonce(),
            tail in prop_oneof![
                ".{0,30}",
                "[0-9+:-]{0,12}:[a-zA-Z]{0,2}",
                ("[+0 -]{0,2}", any::<u32>(), "[adrmADYN ]{1,2}").prop_map(|(p, n, c)| format!("{p}{n}:{c}")),
            ],
            with_prefix in any::<bool>(),
        ) {
            let text = if with_prefix {
                format!("gk1:{}:{tail}", nonce.as_str())
            } else {
                tail
            };
            if let Some((number, action)) = decode(&nonce, &text) {
                prop_assert_eq!(encode(&nonce, number, action), text);
            }
        }
    }
}
