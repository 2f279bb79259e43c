//! The anchor states a receiver passes through (docs/states.md), with austin's codes.

use serde::{Deserialize, Serialize};

/// One state of a receiver's life. Codes are austin's `AnchorState` values plus ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum State {
    /// The receiver entered the pipeline.
    Receive,
    /// The receiver is not valid for the template's `id_type`.
    ReceiverInvalid,
    /// The template is on the job's discard list.
    Discard,
    /// A `night_drop` template's message arrived inside the night window.
    NightShield,
    /// A `night_delay` message is parked until the next release time.
    NightShieldNextSend,
    /// The same content was already sent to this receiver inside the content window.
    ContentDeduplication,
    /// The receiver reached its daily frequency limit on this channel.
    RuleDeduplication,
    /// A whitelist is set and the receiver is not on it.
    WhiteList,
    /// The provider accepted the message.
    SendSuccess,
    /// The receiver clicked (reported by channels that track clicks).
    Click,
    /// The provider refused the message, after retries.
    SendFail,
    /// A recall succeeded.
    RecallSuccess,
    /// A recall failed.
    RecallFail,
}

impl State {
    /// Every state, in code order.
    pub const ALL: [State; 13] = [
        State::Receive,
        State::ReceiverInvalid,
        State::Discard,
        State::NightShield,
        State::NightShieldNextSend,
        State::ContentDeduplication,
        State::RuleDeduplication,
        State::WhiteList,
        State::SendSuccess,
        State::Click,
        State::SendFail,
        State::RecallSuccess,
        State::RecallFail,
    ];

    /// austin's numeric code.
    pub fn code(self) -> i32 {
        match self {
            State::Receive => 10,
            State::ReceiverInvalid => 15,
            State::Discard => 20,
            State::NightShield => 22,
            State::NightShieldNextSend => 24,
            State::ContentDeduplication => 30,
            State::RuleDeduplication => 40,
            State::WhiteList => 50,
            State::SendSuccess => 60,
            State::Click => 64,
            State::SendFail => 70,
            State::RecallSuccess => 80,
            State::RecallFail => 85,
        }
    }

    /// The name written to tracking (`state` column).
    pub fn name(self) -> &'static str {
        match self {
            State::Receive => "RECEIVE",
            State::ReceiverInvalid => "RECEIVER_INVALID",
            State::Discard => "DISCARD",
            State::NightShield => "NIGHT_SHIELD",
            State::NightShieldNextSend => "NIGHT_SHIELD_NEXT_SEND",
            State::ContentDeduplication => "CONTENT_DEDUPLICATION",
            State::RuleDeduplication => "RULE_DEDUPLICATION",
            State::WhiteList => "WHITE_LIST",
            State::SendSuccess => "SEND_SUCCESS",
            State::Click => "CLICK",
            State::SendFail => "SEND_FAIL",
            State::RecallSuccess => "RECALL_SUCCESS",
            State::RecallFail => "RECALL_FAIL",
        }
    }

    /// Parses a state name as written in tracking.
    pub fn from_name(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether a receiver's life ends in this state (docs/states.md). `NightShieldNextSend` is not
    /// terminal: the receiver comes back when released.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::ReceiverInvalid
                | State::Discard
                | State::NightShield
                | State::ContentDeduplication
                | State::RuleDeduplication
                | State::WhiteList
                | State::SendSuccess
                | State::SendFail
        )
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_codes_ascend() {
        let mut last = 0;
        for s in State::ALL {
            assert_eq!(State::from_name(s.name()), Some(s));
            assert!(s.code() > last, "{s} out of order");
            last = s.code();
        }
        assert_eq!(State::ALL.iter().filter(|s| s.is_terminal()).count(), 8);
    }
}
