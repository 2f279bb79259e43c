//! WeCom group robot, against the request and answers of WeCom's group-robot documentation
//! (`developer.work.weixin.qq.com/document/path/91770`). One message per group: the
//! errcode decides every receiver.

use serde_json::json;

use super::*;
use crate::util::kit::test_batch;

#[test]
fn the_documented_text_message_mentions_by_mobile() {
    let b = test_batch(
        Channel::EnterpriseWeChatRobot,
        r#"{"content":"广州今日天气：29度，大部分多云，降雨概率：60%"}"#,
    );
    assert_eq!(
        WecomRobot::payload(&b, &["13800001111".into(), "@all".into()]),
        json!({"msgtype": "text", "text": {
            "content": "广州今日天气：29度，大部分多云，降雨概率：60%",
            "mentioned_mobile_list": ["13800001111", "@all"]}})
    );
    // No receiver named: the message mentions everyone.
    assert_eq!(
        WecomRobot::payload(&b, &[])["text"]["mentioned_mobile_list"],
        json!(["@all"])
    );
}

#[test]
fn answers() {
    assert!(matches!(
        WecomRobot::judge(r#"{"errcode":0,"errmsg":"ok"}"#),
        Ok(Delivered::All)
    ));
    // 20 messages per minute per robot.
    let e = WecomRobot::judge(r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#).unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    // The key is the credential.
    let e = WecomRobot::judge(r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#).unwrap_err();
    assert!(matches!(e, SendError::Unauthorized(_)), "{e:?}");
    assert_eq!(e.reason(), "wecom_robot: 93000 invalid webhook url");
    let e = WecomRobot::judge(
        r#"{"errcode":40008,"errmsg":"Warning: wrong json format. invalid message type"}"#,
    )
    .unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
}
