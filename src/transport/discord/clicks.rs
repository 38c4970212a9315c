//! Button and modal ids, and who may press them.
//!
//! Several gatekeep processes may share one bot token, and every one of them
//! receives every click over the gateway. The `custom_id` of each component
//! therefore carries a random per-run nonce: a click without this run's
//! nonce belongs to someone else and is neither acknowledged nor acted on.
//! Pure functions only; the click handler in `mod.rs` does the I/O.

use std::fmt;

use rand::Rng;

use crate::approval::{Question, Shown};

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
    /// Question: choose option `index` (a button; the label is taken from
    /// the pending request, never from the click).
    Pick(u8),
    /// Question: the options chosen in its select menu (the values are
    /// option indexes).
    PickSelected,
    /// Question: open the "answer in your own words" modal.
    AnswerInWords,
    /// Question: the submitted answer modal (one text per question).
    AnswerSubmitted,
    /// Question: dismiss it (`Verdict::Deny` without a reason).
    Dismiss,
}

/// At most this many options can be chosen by id (a select menu holds 25).
pub const MAX_PICK: u8 = 25;

impl Action {
    fn code(self) -> String {
        let c = match self {
            Action::Approve => 'a',
            Action::ApproveAndTrust => 't',
            Action::Deny => 'd',
            Action::DenyWithReason => 'r',
            Action::ReasonSubmitted => 'm',
            Action::ApproveSelected => 'A',
            Action::DenySelected => 'D',
            Action::ApproveAll => 'Y',
            Action::DenyAll => 'N',
            Action::Pick(index) => return format!("o{index}"),
            Action::PickSelected => 's',
            Action::AnswerInWords => 'w',
            Action::AnswerSubmitted => 'q',
            Action::Dismiss => 'x',
        };
        c.to_string()
    }

    fn from_code(code: &str) -> Option<Self> {
        if let Some(digits) = code.strip_prefix('o') {
            // Only the spelling `code` produces, and only a real index.
            let index: u8 = canonical(digits)?.parse().ok()?;
            return (index < MAX_PICK).then_some(Action::Pick(index));
        }
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
            "s" => Action::PickSelected,
            "w" => Action::AnswerInWords,
            "q" => Action::AnswerSubmitted,
            "x" => Action::Dismiss,
            _ => return None,
        })
    }

    /// Submitted through a modal (not a component click).
    #[must_use]
    pub fn is_modal_submission(self) -> bool {
        matches!(self, Action::ReasonSubmitted | Action::AnswerSubmitted)
    }

    /// Only a question takes it.
    #[must_use]
    pub fn is_for_question(self) -> bool {
        matches!(
            self,
            Action::Pick(_)
                | Action::PickSelected
                | Action::AnswerInWords
                | Action::AnswerSubmitted
                | Action::Dismiss
        )
    }
}

/// `digits` when it is a canonical decimal (no sign, no leading zero).
fn canonical(digits: &str) -> Option<&str> {
    let ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    ok.then_some(digits)
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

    /// Spelled as [`Nonce::random`] spells them: 16 lowercase hex digits.
    #[must_use]
    pub fn is_valid(text: &str) -> bool {
        text.len() == 16 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", self.0)
    }
}

/// The `custom_id` for `action` on request `number` in the run with `nonce`
/// (at most 4 + 17 + 11 + 3 characters: far below Discord's 100).
#[must_use]
pub fn encode(nonce: &Nonce, number: u32, action: Action) -> String {
    format!("{PREFIX}:{}:{number}:{}", nonce.0, action.code())
}

/// The run a `custom_id` belongs to (its nonce), for the hub, which hands
/// each click to its run without reading the rest. `None` when the id is
/// not gatekeep's or its nonce is not a nonce.
#[must_use]
pub fn nonce_of(custom_id: &str) -> Option<&str> {
    let mut parts = custom_id.split(':');
    if parts.next()? != PREFIX {
        return None;
    }
    parts.next().filter(|n| Nonce::is_valid(n))
}

/// The request number and action of a `custom_id`, or `None` when it is not
/// one of this run's (other run, other bot feature, malformed).
#[must_use]
pub fn decode(nonce: &Nonce, custom_id: &str) -> Option<(u32, Action)> {
    let mut parts = custom_id.split(':');
    if parts.next()? != PREFIX || parts.next()? != nonce.0 {
        return None;
    }
    // Exactly the spelling `encode` produces: `u32::from_str` also takes
    // `+7` and `007`, and a forged id must not have spellings of its own.
    let number = canonical(parts.next()?)?.parse().ok()?;
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

/// The `custom_id` of the answer modal's text input for question `index`.
#[must_use]
pub fn answer_input_id(index: usize) -> String {
    format!("a{index}")
}

/// The answer a question click or modal stands for, with every label taken
/// from the pending `request` (never from the payload): `selected` holds
/// the option indexes of a select menu, `texts` the modal's
/// `(input id, value)` pairs. `None` when it does not fit the question (no
/// such option, several options for a single choice, free text where none
/// is accepted, a missing answer): nothing is decided then.
#[must_use]
pub fn answer_of(
    request: &Shown,
    action: Action,
    selected: &[u32],
    texts: &[(String, String)],
) -> Option<Vec<Vec<String>>> {
    let questions = request.ask.questions();
    match action {
        Action::Pick(index) => {
            let [q] = questions else {
                return None;
            };
            Some(vec![q.pick(&[usize::from(index)])?])
        }
        Action::PickSelected => {
            let [q] = questions else {
                return None;
            };
            let indexes: Vec<usize> = selected
                .iter()
                .map(|i| usize::try_from(*i).ok())
                .collect::<Option<_>>()?;
            Some(vec![q.pick(&indexes)?])
        }
        Action::AnswerSubmitted => questions
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let id = answer_input_id(i);
                let text = texts.iter().find(|(k, _)| *k == id).map(|(_, v)| v)?;
                typed_answer(q, text)
            })
            .collect(),
        _ => None,
    }
}

/// A typed answer to one question: an option's label (any case) is that
/// option; otherwise free text where the question accepts it, else option
/// numbers (`2` or `1,3`).
fn typed_answer(q: &Question, text: &str) -> Option<Vec<String>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Some((label, _)) = q
        .options
        .iter()
        .find(|(label, _)| label.trim().eq_ignore_ascii_case(text))
    {
        return Some(vec![label.clone()]);
    }
    q.free_text(text).or_else(|| q.pick_numbers(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::{Ask, Deadline, Subject};

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
            Action::Pick(0),
            Action::Pick(24),
            Action::PickSelected,
            Action::AnswerInWords,
            Action::AnswerSubmitted,
            Action::Dismiss,
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
        // Option indexes: canonical and within a select menu's 25.
        assert_eq!(
            decode(&nonce, "gk1:00112233aabbccdd:1:o3"),
            Some((1, Action::Pick(3)))
        );
        for forged in ["o25", "o03", "o", "o+1", "o-1", "o1x", "o256", "x1"] {
            assert_eq!(
                decode(&nonce, &format!("gk1:00112233aabbccdd:1:{forged}")),
                None,
                "{forged}"
            );
        }
    }

    fn question(options: &[&str], multiple: bool, custom: bool) -> Question {
        Question {
            header: "Database".into(),
            text: "Which one?".into(),
            options: options
                .iter()
                .map(|o| ((*o).to_owned(), String::new()))
                .collect(),
            multiple,
            custom,
        }
    }

    fn asking(questions: Vec<Question>) -> Shown {
        Shown {
            needs: crate::approval::Needs::default(),
            number: 4,
            deadline: Deadline::shown_as(std::time::UNIX_EPOCH, std::time::Duration::from_secs(60)),
            ask: Ask {
                id: "que_1".into(),
                session_id: "ses_1".into(),
                agent: None,
                subject: Subject::Question(questions),
            },
        }
    }

    fn typed(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn answers_take_labels_from_the_request() {
        let single = asking(vec![question(&["Postgres", "SQLite"], false, false)]);
        let pick = |i| answer_of(&single, Action::Pick(i), &[], &[]);
        assert_eq!(pick(1), Some(vec![vec!["SQLite".to_owned()]]));
        assert_eq!(pick(2), None, "no such option");
        let select = |values: &[u32], r: &Shown| answer_of(r, Action::PickSelected, values, &[]);
        assert_eq!(
            select(&[0], &single),
            Some(vec![vec!["Postgres".to_owned()]])
        );
        assert_eq!(select(&[0, 1], &single), None, "one choice only");
        assert_eq!(select(&[], &single), None);
        let multiple = asking(vec![question(&["a", "b", "c"], true, false)]);
        assert_eq!(
            select(&[2, 0, 2], &multiple),
            Some(vec![vec!["a".to_owned(), "c".to_owned()]])
        );
        assert_eq!(select(&[3], &multiple), None);
        // Typed: a label, option numbers, free text only where accepted.
        let submit = |r: &Shown, pairs: &[(&str, &str)]| {
            answer_of(r, Action::AnswerSubmitted, &[], &typed(pairs))
        };
        assert_eq!(
            submit(&single, &[("a0", " sqlite ")]),
            Some(vec![vec!["SQLite".to_owned()]])
        );
        assert_eq!(
            submit(&single, &[("a0", "1")]),
            Some(vec![vec!["Postgres".to_owned()]])
        );
        assert_eq!(submit(&single, &[("a0", "MySQL")]), None, "not custom");
        assert_eq!(submit(&single, &[("a0", "1,2")]), None, "one choice only");
        assert_eq!(submit(&single, &[("a1", "1")]), None, "wrong input");
        let custom = asking(vec![question(&["Yes", "No"], false, true)]);
        assert_eq!(
            submit(&custom, &[("a0", "only on Fridays")]),
            Some(vec![vec!["only on Fridays".to_owned()]])
        );
        assert_eq!(submit(&custom, &[("a0", "  ")]), None);
        // Several questions: every one needs its answer.
        let two = asking(vec![
            question(&["Yes", "No"], false, true),
            question(&["x", "y"], true, false),
        ]);
        assert_eq!(
            submit(&two, &[("a0", "no"), ("a1", "1,2")]),
            Some(vec![
                vec!["No".to_owned()],
                vec!["x".to_owned(), "y".to_owned()]
            ])
        );
        assert_eq!(submit(&two, &[("a0", "no")]), None);
        // Buttons and menus answer a single question only.
        assert_eq!(answer_of(&two, Action::Pick(0), &[], &[]), None);
        assert_eq!(answer_of(&single, Action::Approve, &[], &[]), None);
    }

    #[test]
    fn the_hub_reads_the_run_of_a_custom_id_and_nothing_else() {
        let nonce = Nonce::fixed("00112233aabbccdd");
        assert_eq!(
            nonce_of(&encode(&nonce, 7, Action::Approve)),
            Some("00112233aabbccdd")
        );
        assert_eq!(nonce_of("gk1:../../etc:1:a"), None);
        assert_eq!(nonce_of("gk1:00112233AABBCCDD:1:a"), None);
        assert_eq!(nonce_of("other:00112233aabbccdd:1:a"), None);
        assert_eq!(nonce_of(""), None);
        assert!(Nonce::is_valid(Nonce::random().as_str()));
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
        Action::Pick(0),
        Action::Pick(7),
        Action::Pick(24),
        Action::PickSelected,
        Action::AnswerInWords,
        Action::AnswerSubmitted,
        Action::Dismiss,
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
                ("[+0 -]{0,2}", any::<u32>(), "[adrmADYNswqx ]{1,2}").prop_map(|(p, n, c)| format!("{p}{n}:{c}")),
                ("[+0 -]{0,2}", any::<u32>(), "o[+0 -]{0,2}[0-9]{0,3}").prop_map(|(p, n, c)| format!("{p}{n}:{c}")),
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
