//! Helpers the provider tests share: a batch, accounts from TOML, one send.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tidings_model::{Channel, MessageMeta};
use tidings_sinks::SendBatch;
use tidings_sinks::account::{AccountConfig, Accounts};

/// One message `id` on `channel` with the rendered `content`, to `receivers`.
pub fn batch<R: ToString>(id: &str, channel: Channel, content: &str, receivers: &[R]) -> SendBatch {
    SendBatch {
        meta: Arc::new(MessageMeta {
            live: None,
            accounts: None,
            message_id: id.into(),
            template_id: 9,
            business_id: 1,
            biz_id: None,
            content: content.into(),
            event_time: 0,
            seq: 0,
        }),
        channel,
        msg_type: tidings_model::MsgType::Notice,
        event_time: 0,
        receivers: receivers.iter().map(|r| r.to_string().into()).collect(),
    }
}

/// Accounts from `[NAME]` tables; every one must pass the job check.
pub fn accounts(toml_text: &str) -> Accounts {
    let configs: BTreeMap<String, AccountConfig> = toml::from_str(toml_text).unwrap();
    for (name, c) in &configs {
        let problems = c.validate(&format!("accounts.{name}"));
        assert!(problems.is_empty(), "{problems:?}");
    }
    Accounts::build(&configs, Path::new("/"), 86).unwrap()
}

/// Sends one batch through account `name` on a fresh runtime.
pub fn send(accounts: &Accounts, name: &str, b: &SendBatch) -> Vec<Result<(), String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(accounts.get(accounts.index(name).unwrap()).send(b))
        .into_vec()
}
