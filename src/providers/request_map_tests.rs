//! Tests of the request maps between the hub (OpenAI chat) and the other protocols: every field
//! a translation carries, merges or drops, checked on one rich request each way.

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use crate::codec::DEFAULT_MAX_DEPTH as D;

#[test]
fn openai_request_maps_to_anthropic() {
    let body = br#"{"model":"x","temperature":0.6,"stop":"END","parallel_tool_calls":false,"messages":[
      {"role":"system","content":"A"},{"role":"developer","content":[{"type":"text","text":"B"}]},
      {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
      {"role":"assistant","content":"","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"not json"}},{"id":"call_2","type":"function","function":{"name":"g","arguments":"{\"k\":2}"}}]},
      {"role":"tool","tool_call_id":"call_1","content":"r1"},{"role":"tool","tool_call_id":"call_2","content":"r2"},
      {"role":"user","content":"thanks"}],
      "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}}}"#;
    let chat = sonic_rs::from_slice(body).unwrap();
    let out = super::anthropic::request::from_chat(&chat, "claude-x", D).unwrap();
    let v: Value = sonic_rs::from_slice(&out).unwrap();
    assert_eq!(v["system"].as_str(), Some("A\n\nB"));
    assert_eq!(v["max_tokens"].as_u64(), Some(4096));
    assert_eq!(
        v["temperature"].as_f64(),
        Some(0.6),
        "above 1 is refused by fidelity::check"
    );
    assert_eq!(v["stop_sequences"][0].as_str(), Some("END"));
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "tool results merged with the next user turn: {v:?}");
    assert_eq!(
        msgs[0]["content"][1]["source"]["media_type"].as_str(),
        Some("image/png")
    );
    assert_eq!(msgs[1]["content"].as_array().unwrap().len(), 2, "empty text dropped");
    assert_eq!(msgs[1]["content"][0]["input"].as_object().map(|o| o.len()), Some(0));
    assert_eq!(msgs[1]["content"][1]["input"]["k"].as_u64(), Some(2));
    assert_eq!(msgs[2]["content"][0]["type"].as_str(), Some("tool_result"));
    assert_eq!(msgs[2]["content"][1]["tool_use_id"].as_str(), Some("call_2"));
    assert_eq!(msgs[2]["content"][2]["text"].as_str(), Some("thanks"));
    assert_eq!(v["tools"][0]["input_schema"]["type"].as_str(), Some("object"));
    assert_eq!(v["tool_choice"]["type"].as_str(), Some("tool"));
    assert_eq!(v["tool_choice"]["disable_parallel_tool_use"].as_bool(), Some(true));
}

#[test]
fn anthropic_request_maps_to_openai_and_gemini() {
    let body = br#"{"model":"x","max_tokens":50,"system":[{"type":"text","text":"S","cache_control":{"type":"ephemeral"}}],"stream":true,
      "messages":[{"role":"user","content":"q"},
        {"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"text","text":"calling"},{"type":"tool_use","id":"toolu_1","name":"f","input":{"a":1}}]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"42"}]},{"type":"text","text":"ok?"}]}],
      "tools":[{"name":"f","input_schema":{"type":"object","additionalProperties":false}}],"tool_choice":{"type":"any"}}"#;
    let chat = super::anthropic::front_request::to_chat(body, "gpt-x", D)
        .map_err(|e| panic!("{e}"))
        .unwrap();
    let v: Value = sonic_rs::from_slice(&sonic_rs::to_vec(&chat).unwrap()).unwrap();
    assert_eq!(v["stream_options"]["include_usage"].as_bool(), Some(true));
    assert_eq!(v["messages"][0]["content"].as_str(), Some("S"));
    assert_eq!(
        v["messages"][2]["tool_calls"][0]["function"]["arguments"].as_str(),
        Some(r#"{"a":1}"#)
    );
    assert_eq!(v["messages"][3]["role"].as_str(), Some("tool"));
    assert_eq!(v["messages"][3]["content"].as_str(), Some("42"));
    assert_eq!(v["messages"][4]["content"].as_str(), Some("ok?"));
    assert_eq!(v["tool_choice"].as_str(), Some("required"));
    let g: Value = sonic_rs::from_slice(&super::gemini::request::from_chat(&chat, D).unwrap()).unwrap();
    assert_eq!(g["systemInstruction"]["parts"][0]["text"].as_str(), Some("S"));
    assert_eq!(g["contents"][1]["role"].as_str(), Some("model"));
    assert_eq!(
        g["contents"][1]["parts"][1]["functionCall"]["args"]["a"].as_u64(),
        Some(1)
    );
    let response = &g["contents"][2]["parts"][0]["functionResponse"];
    assert_eq!(response["name"].as_str(), Some("f"), "name looked up from the call id");
    assert_eq!(response["response"]["a"].as_u64(), None);
    assert_eq!(response["response"]["content"].as_str(), Some("42"));
    assert_eq!(g["contents"][2]["parts"][1]["text"].as_str(), Some("ok?"));
    let decl = &g["tools"][0]["functionDeclarations"][0];
    assert!(decl["parameters"].get("additionalProperties").is_none());
    assert_eq!(g["toolConfig"]["functionCallingConfig"]["mode"].as_str(), Some("ANY"));
    assert_eq!(g["generationConfig"]["maxOutputTokens"].as_u64(), Some(50));
}
