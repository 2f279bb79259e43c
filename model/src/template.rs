//! Templates (docs/templates.md): what a message says, on which channel, to which kind of receiver.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A channel tidings can send through. Names are austin's English codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// App push (GeTui).
    Push,
    /// SMS.
    Sms,
    /// Email over SMTP.
    Email,
    /// WeChat official account template message.
    OfficialAccounts,
    /// WeChat mini program subscribe message.
    MiniProgram,
    /// WeCom app message.
    EnterpriseWeChat,
    /// DingTalk custom robot.
    DingDingRobot,
    /// DingTalk work notice.
    DingDingWorkNotice,
    /// WeCom group robot.
    EnterpriseWeChatRobot,
    /// Feishu robot.
    FeiShuRobot,
    /// Alipay mini program template message.
    AlipayMiniProgram,
    /// A generic JSON webhook (tidings' own).
    Webhook,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 12] = [
        Channel::Push,
        Channel::Sms,
        Channel::Email,
        Channel::OfficialAccounts,
        Channel::MiniProgram,
        Channel::EnterpriseWeChat,
        Channel::DingDingRobot,
        Channel::DingDingWorkNotice,
        Channel::EnterpriseWeChatRobot,
        Channel::FeiShuRobot,
        Channel::AlipayMiniProgram,
        Channel::Webhook,
    ];

    /// Whether sent messages can be taken back (`code: "recall"`): DingTalk work notices and
    /// WeCom app messages.
    pub fn supports_recall(self) -> bool {
        matches!(
            self,
            Channel::DingDingWorkNotice | Channel::EnterpriseWeChat
        )
    }

    /// The code used in files and tracking.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Push => "push",
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::OfficialAccounts => "official_accounts",
            Channel::MiniProgram => "mini_program",
            Channel::EnterpriseWeChat => "enterprise_we_chat",
            Channel::DingDingRobot => "ding_ding_robot",
            Channel::DingDingWorkNotice => "ding_ding_work_notice",
            Channel::EnterpriseWeChatRobot => "enterprise_we_chat_robot",
            Channel::FeiShuRobot => "fei_shu_robot",
            Channel::AlipayMiniProgram => "alipay_mini_program",
            Channel::Webhook => "webhook",
        }
    }
}

/// What kind of message a template sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MsgType {
    /// Notices (order shipped, ...).
    Notice,
    /// Marketing.
    Marketing,
    /// Verification codes.
    AuthCode,
}

impl MsgType {
    /// The code used in files and tracking.
    pub fn name(self) -> &'static str {
        match self {
            MsgType::Notice => "notice",
            MsgType::Marketing => "marketing",
            MsgType::AuthCode => "auth_code",
        }
    }
}

/// What a template's receivers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdType {
    /// An internal user id (austin's code `userId` is read too).
    #[serde(alias = "userId")]
    UserId,
    /// A device id.
    Did,
    /// A mobile phone number.
    Phone,
    /// A WeChat open id (austin's code `openId` is read too).
    #[serde(alias = "openId")]
    OpenId,
    /// An email address.
    Email,
    /// A WeCom user id.
    EnterpriseUserId,
    /// A DingTalk user id.
    DingDingUserId,
    /// A GeTui client id.
    Cid,
    /// A Feishu user id.
    FeiShuUserId,
}

/// What happens to a message whose event time is inside the night window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Shield {
    /// Send at any hour.
    #[default]
    None,
    /// Drop night-time messages (NIGHT_SHIELD).
    NightDrop,
    /// Park night-time messages until the next release time (NIGHT_SHIELD_NEXT_SEND).
    NightDelay,
}

/// austin's template type; part of the businessId.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TemplateType {
    /// Scheduled (austin code 10).
    Cron,
    /// Real time (austin code 20).
    #[default]
    Realtime,
}

impl TemplateType {
    /// austin's numeric code.
    pub fn code(self) -> i64 {
        match self {
            TemplateType::Cron => 10,
            TemplateType::Realtime => 20,
        }
    }
}

fn yes() -> bool {
    true
}

/// One `[[template]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The template id producers name in `messageTemplateId`.
    pub id: i64,
    /// A human name, e.g. "login code".
    pub name: String,
    /// The channel it sends through.
    pub channel: Channel,
    /// notice | marketing | auth_code.
    pub msg_type: MsgType,
    /// What receivers are; decides how they are validated.
    pub id_type: IdType,
    /// Night shield; default `none`.
    #[serde(default)]
    pub shield: Shield,
    /// realtime | cron; default `realtime`.
    #[serde(default)]
    pub template_type: TemplateType,
    /// When a `cron` template is sent to its crowd (austin's `expectPushTime`), e.g.
    /// `"0 0 10 * * ?"`; read from the job file's templates (docs/templates.md "Campaigns").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The crowd of a `cron` template: a CSV of receivers and variables (austin's
    /// `cronCrowdPath`), relative to the templates file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crowd: Option<String>,
    /// The job account (`[accounts.NAME]`) that sends it.
    pub account: String,
    /// `false` exempts this template from both dedup rules; default `true`.
    #[serde(default = "yes")]
    pub dedup: bool,
    /// The channel's content model; string leaves may hold `{$name}` placeholders. Not to be
    /// changed once the template has rendered: [`Template::render`] keeps the plan it made of
    /// it (a copy starts afresh).
    #[serde(default)]
    pub content: serde_json::Map<String, serde_json::Value>,
    /// `content` laid out for rendering, made at its first render (see [`Template::render`]).
    #[serde(skip)]
    plan: ContentPlan,
}

impl Template {
    /// The content model rendered with `vars` as compact JSON (the text of
    /// [`crate::render::render_json`]), from the model's plan, laid out at the first call.
    pub fn render(
        &self,
        vars: &crate::variables::Variables,
    ) -> Result<String, crate::render::RenderError> {
        self.plan
            .0
            .get_or_init(|| Box::new(crate::render::JsonPlan::of(&self.content)))
            .render(vars)
    }
}

/// A template's [`crate::render::JsonPlan`], made from its content when first needed: not
/// part of what a template is (two templates of the same content are equal whether or not
/// either has rendered), and not written out. Boxed: a template (held in change records'
/// enums) grows by a pointer and the cell's flag, not by the plan. A copy starts without one
/// (a copy whose content is then changed makes its own).
#[derive(Default)]
struct ContentPlan(std::sync::OnceLock<Box<crate::render::JsonPlan>>);

impl Clone for ContentPlan {
    fn clone(&self) -> ContentPlan {
        ContentPlan::default()
    }
}

impl PartialEq for ContentPlan {
    fn eq(&self, _: &ContentPlan) -> bool {
        true
    }
}

impl Eq for ContentPlan {}

impl std::fmt::Debug for ContentPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentPlan")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    #[serde(default)]
    template: Vec<Template>,
}

/// Errors loading templates.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file could not be read.
    #[error("{path}: cannot read templates: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid template TOML.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// Line, key and what would be accepted.
        message: String,
    },
}

/// The template ids a job may define: austin's businessId writes `type * 1,000,000 + id`
/// (types 10 and 20), so an id of 10,000,000 or more would share a realtime template's
/// businessId (cron template 10,000,001 and realtime template 1 both give 20,000,001…).
pub const TEMPLATE_IDS: std::ops::RangeInclusive<i64> = 1..=9_999_999;

/// Why `id` cannot be a template's, if it cannot.
pub fn check_id(id: i64) -> Result<(), String> {
    if TEMPLATE_IDS.contains(&id) {
        return Ok(());
    }
    Err(format!(
        "template id {id} is out of range: give 1 to 9999999 (austin's businessId holds the id \
         in 7 digits; a larger one would share another template's businessId)"
    ))
}

/// All templates of a job, by id. Shared read-only by every worker.
///
/// A message's template is looked up by id five times on its way (validation, the gate, the
/// send, its two rows): a hash table answers in the same time however many templates a job
/// has (a `BTreeMap`'s search grows with them: ~25 instructions with one template, ~170 with
/// 500; bench/MEASURED.md "Templates by hash"). The list beside it keeps them in id order.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    by_id: crate::ids::FastMap<i64, Arc<Template>>,
    in_order: Vec<Arc<Template>>,
}

impl Templates {
    /// Builds the registry; returns every problem at once (duplicate ids, ids out of
    /// [`TEMPLATE_IDS`]).
    pub fn new(list: Vec<Template>) -> Result<Templates, Vec<String>> {
        let mut sorted = BTreeMap::new();
        let mut problems = Vec::new();
        for t in list {
            let id = t.id;
            if let Err(why) = check_id(id) {
                problems.push(why);
            }
            if sorted.insert(id, Arc::new(t)).is_some() {
                problems.push(format!(
                    "template id {id} is defined twice; give each template its own id"
                ));
            }
        }
        if problems.is_empty() {
            Ok(Templates {
                by_id: sorted.iter().map(|(&id, t)| (id, t.clone())).collect(),
                in_order: sorted.into_values().collect(),
            })
        } else {
            Err(problems)
        }
    }

    /// Parses a templates TOML document; `path` names it in errors.
    pub fn parse(path: &str, text: &str) -> Result<Templates, TemplateError> {
        let file: TemplateFile = toml::from_str(text).map_err(|e| TemplateError::Parse {
            path: path.to_string(),
            message: toml_error_line(text, &e),
        })?;
        Templates::new(file.template).map_err(|p| TemplateError::Parse {
            path: path.to_string(),
            message: p.join("; "),
        })
    }

    /// Loads a templates file.
    pub fn load(path: &Path) -> Result<Templates, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Templates::parse(&path.display().to_string(), &text)
    }

    /// The template with this id.
    pub fn get(&self, id: i64) -> Option<&Arc<Template>> {
        self.by_id.get(&id)
    }

    /// All templates in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Template>> {
        self.in_order.iter()
    }

    /// Number of templates.
    pub fn len(&self) -> usize {
        self.in_order.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.in_order.is_empty()
    }
}

/// Renders a TOML error as one line: `line N: message` (the key is in toml's message).
pub fn toml_error_line(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let key = text[span.clone()].trim();
            if key.is_empty() || key.len() > 60 {
                format!("line {line}: {msg}")
            } else {
                format!("line {line}: `{key}`: {msg}")
            }
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A template renders its content as `render_json` does, and its plan, made at the first
    /// render, is not part of it: a rendered template equals its unrendered copy and is written
    /// out (and read back) the same.
    #[test]
    fn a_template_renders_from_its_plan_which_is_not_part_of_it() {
        let t = Templates::parse(
            "t.toml",
            r#"
[[template]]
id = 1
name = "code"
channel = "sms"
msg_type = "auth_code"
id_type = "phone"
account = "a"
[template.content]
content = "Your code is {$code} {$"
"#,
        )
        .unwrap();
        let t = t.get(1).unwrap();
        let fresh: Template = serde_json::from_value(serde_json::to_value(&**t).unwrap()).unwrap();
        let vars: crate::variables::Variables = serde_json::json!({"code": "4\"7"})
            .as_object()
            .unwrap()
            .clone()
            .into();
        let want = crate::render::render_json(&t.content, &vars);
        assert_eq!(t.render(&vars), want);
        assert_eq!(
            t.render(&vars).unwrap(),
            r#"{"content":"Your code is 4\"7 {$"}"#
        );
        assert_eq!(**t, fresh);
        assert_eq!(
            serde_json::to_value(&**t).unwrap(),
            serde_json::to_value(&fresh).unwrap()
        );
        assert_eq!(
            t.render(&Default::default()),
            Err(crate::render::RenderError::MissingVariable("code".into()))
        );
        // A copy of a rendered template, its content changed, renders its own content.
        let mut copy = (**t).clone();
        copy.content
            .insert("content".into(), serde_json::json!("now {$code}"));
        assert_eq!(copy.render(&vars).unwrap(), r#"{"content":"now 4\"7"}"#);
    }

    #[test]
    fn parses_contract_example() {
        let t = Templates::parse(
            "t.toml",
            r#"
[[template]]
id = 1
name = "login code"
channel = "sms"
msg_type = "auth_code"
id_type = "phone"
shield = "none"
template_type = "realtime"
account = "sms-main"
dedup = true
[template.content]
content = "Your code is {$code}."
"#,
        )
        .unwrap();
        let t = t.get(1).unwrap();
        assert_eq!(t.channel, Channel::Sms);
        assert_eq!(t.content["content"], "Your code is {$code}.");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = Templates::parse(
            "t.toml",
            "[[template]]\nid = 1\nname = \"x\"\nchannel = \"sms\"\nmsg_type = \"notice\"\nid_type = \"phone\"\naccount = \"a\"\ncolour = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("t.toml") && err.contains("colour") && err.contains("line 8"),
            "{err}"
        );
    }

    /// austin's own codes `userId` and `openId` name the same receiver kinds as ours.
    #[test]
    fn austins_id_type_codes_are_read() {
        for (code, want) in [
            ("userId", IdType::UserId),
            ("user_id", IdType::UserId),
            ("openId", IdType::OpenId),
            ("open_id", IdType::OpenId),
        ] {
            let text = format!(
                "[[template]]\nid = 1\nname = \"x\"\nchannel = \"sms\"\nmsg_type = \"notice\"\nid_type = \"{code}\"\naccount = \"a\"\n"
            );
            let t = Templates::parse("t.toml", &text).unwrap();
            assert_eq!(t.get(1).unwrap().id_type, want, "{code}");
        }
    }

    #[test]
    fn duplicate_ids_rejected() {
        let one = "[[template]]\nid = 1\nname = \"x\"\nchannel = \"sms\"\nmsg_type = \"notice\"\nid_type = \"phone\"\naccount = \"a\"\n";
        let err = Templates::parse("t.toml", &format!("{one}{one}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("defined twice"), "{err}");
    }

    /// Ids austin's businessId cannot hold apart are refused, each named: cron template
    /// 10,000,001 gave the businessId of realtime template 1.
    #[test]
    fn ids_outside_seven_digits_are_refused() {
        let of = |id: i64| {
            format!(
                "[[template]]\nid = {id}\nname = \"t{id}\"\nchannel = \"sms\"\nmsg_type = \"notice\"\nid_type = \"phone\"\naccount = \"a\"\n"
            )
        };
        let text: String = [0, -1, 10_000_000, 1].into_iter().map(of).collect();
        let err = Templates::parse("t.toml", &text).unwrap_err().to_string();
        for id in ["0", "-1", "10000000"] {
            assert!(
                err.contains(&format!("template id {id} is out of range")),
                "{err}"
            );
        }
        assert!(!err.contains("template id 1 "), "{err}");
        let d = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_ne!(
            crate::ids::business_id(10, 9_999_999, d),
            crate::ids::business_id(20, 1, d)
        );
    }

    #[test]
    fn templates_are_found_by_id_and_listed_in_id_order() {
        let text: String = [30, 2, 7, 1000, 9_999_999]
            .iter()
            .map(|id| {
                format!(
                    "[[template]]\nid = {id}\nname = \"t{id}\"\nchannel = \"sms\"\nmsg_type = \"notice\"\nid_type = \"phone\"\naccount = \"a\"\n"
                )
            })
            .collect();
        let t = Templates::parse("t.toml", &text).unwrap();
        let listed: Vec<i64> = t.iter().map(|t| t.id).collect();
        assert_eq!(listed, [2, 7, 30, 1000, 9_999_999]);
        assert_eq!(t.len(), 5);
        for id in listed {
            assert_eq!(t.get(id).map(|t| t.name.clone()), Some(format!("t{id}")));
        }
        assert!(t.get(8).is_none());
        assert!(Templates::default().is_empty());
    }
}
