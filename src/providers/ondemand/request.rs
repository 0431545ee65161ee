//! OpenAI chat (the hub) -> an on-demand turn: the new user turn as `query`, the earlier turns
//! folded in front of it for a new session, the system prompt and sampling settings in
//! `modelConfigs`, and the conversation's digests (what a live session is found by).
//! Invariant: the digest chain covers exactly what on-demand keeps in a session, user and
//! assistant turns in order (system prompts go with every query, so they are not part of it),
//! and the chain of a request's earlier turns equals the chain its previous turn committed
//! with the answer (`chain(turn, "assistant", answer)`).

use bytes::Bytes;
use serde::Serialize;

use super::sessions::{chain, digest_of, Digest};
use crate::providers::openai::ChatRequest;

/// The body that opens a session. `externalUserId` names the caller on on-demand's side.
pub const CREATE_BODY: &[u8] = br#"{"externalUserId":"rotor","pluginIds":[]}"#;

/// One chat request, ready to be sent as an on-demand turn.
#[derive(Debug)]
pub struct Conversation {
    pub endpoint_id: String,
    pub stream: bool,
    /// The chain of the earlier turns; `None` when there is no assistant turn yet (nothing a
    /// session could continue).
    pub earlier: Option<Digest>,
    /// The chain of the earlier turns and the new one: the answer continues it.
    pub turn: Digest,
    /// The new turn alone: what a continued session is sent.
    pub query: String,
    /// The earlier turns, then the new one: what a new session is sent.
    pub folded: String,
    pub configs: ModelConfigs,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelConfigs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fulfillment_prompt: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Query<'a> {
    endpoint_id: &'a str,
    query: &'a str,
    response_mode: &'static str,
    plugin_ids: [&'a str; 0],
    model_configs: &'a ModelConfigs,
}

impl Conversation {
    /// Reads the hub request. A conversation must end in a user (or tool) turn: that is the
    /// query.
    pub fn from_chat(chat: &ChatRequest, endpoint_id: &str) -> Result<Conversation, String> {
        if chat.n.is_some_and(|n| n > 1) {
            return Err("on-demand answers one choice per request (n > 1 is not supported)".to_owned());
        }
        let mut system = Vec::new();
        let mut turns: Vec<(&str, String)> = Vec::with_capacity(chat.messages.len());
        for m in &chat.messages {
            let text = m.content.as_ref().map(|c| c.text()).unwrap_or_default();
            match m.role.as_str() {
                "system" | "developer" => system.push(text),
                "assistant" => turns.push(("assistant", text)),
                "tool" | "function" => turns.push(("tool", text)),
                _ => turns.push(("user", text)),
            }
        }
        let split = turns
            .iter()
            .rposition(|(role, _)| *role == "assistant")
            .map_or(0, |i| i + 1);
        let (before, new) = turns.split_at(split);
        if new.is_empty() {
            return Err("the conversation must end with a user message (on-demand answers a query)".to_owned());
        }
        let root = digest_of(("ondemand", endpoint_id));
        let mut digest = root;
        for (role, text) in before {
            digest = chain(digest, role, text);
        }
        let earlier = (!before.is_empty()).then_some(digest);
        for (role, text) in new {
            digest = chain(digest, role, text);
        }
        let query = new
            .iter()
            .map(|(role, text)| match *role {
                "tool" => format!("Tool result: {text}"),
                _ => text.clone(),
            })
            .collect::<Vec<_>>()
            .join("\n\n");
        let folded = fold(before, &query);
        let configs = ModelConfigs {
            fulfillment_prompt: (!system.is_empty()).then(|| system.join("\n\n")),
            stop_sequences: chat.stop_list(),
            temperature: chat.temperature,
            top_p: chat.top_p,
            max_tokens: chat.output_limit(),
            presence_penalty: chat.presence_penalty,
            frequency_penalty: chat.frequency_penalty,
        };
        Ok(Conversation {
            endpoint_id: endpoint_id.to_owned(),
            stream: chat.stream == Some(true),
            earlier,
            turn: digest,
            query,
            folded,
            configs,
        })
    }

    /// The query body: the new turn alone (`folded = false`) or after the earlier turns.
    pub fn body(&self, folded: bool) -> Result<Bytes, String> {
        let query = Query {
            endpoint_id: &self.endpoint_id,
            query: if folded { &self.folded } else { &self.query },
            response_mode: if self.stream { "stream" } else { "sync" },
            plugin_ids: [],
            model_configs: &self.configs,
        };
        sonic_rs::to_vec(&query)
            .map(Bytes::from)
            .map_err(|e| format!("cannot encode the on-demand query: {e}"))
    }
}

/// The earlier turns as a transcript in front of the new query (a new session has no history).
fn fold(before: &[(&str, String)], query: &str) -> String {
    if before.is_empty() {
        return query.to_owned();
    }
    let mut out = String::from("The conversation so far:\n\n");
    for (role, text) in before {
        out.push_str(match *role {
            "assistant" => "Assistant: ",
            "tool" => "Tool result: ",
            _ => "User: ",
        });
        out.push_str(text);
        out.push_str("\n\n");
    }
    out.push_str("Reply to the latest message:\n\n");
    out.push_str(query);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::openai::read_chat;
    use sonic_rs::JsonValueTrait;

    fn conv(body: &str) -> Conversation {
        let chat = read_chat(body.as_bytes(), 64).unwrap();
        Conversation::from_chat(&chat, "predefined-openai-gpt4o").unwrap()
    }

    #[test]
    fn system_and_settings_go_to_model_configs_and_history_folds() {
        let c = conv(
            r#"{"model":"m","temperature":0.5,"top_p":0.9,"max_tokens":99,"stop":["END"],"messages":[
            {"role":"system","content":"be brief"},{"role":"user","content":"hi"},
            {"role":"assistant","content":"hello"},{"role":"user","content":"how are you?"}]}"#,
        );
        assert_eq!(c.query, "how are you?");
        assert!(c.folded.contains("User: hi\n\nAssistant: hello\n\n"), "{}", c.folded);
        assert!(c.folded.ends_with("how are you?"));
        let v: sonic_rs::Value = sonic_rs::from_slice(&c.body(false).unwrap()).unwrap();
        assert_eq!(v["endpointId"].as_str(), Some("predefined-openai-gpt4o"));
        assert_eq!(v["query"].as_str(), Some("how are you?"));
        assert_eq!(v["responseMode"].as_str(), Some("sync"));
        assert_eq!(v["modelConfigs"]["fulfillmentPrompt"].as_str(), Some("be brief"));
        assert_eq!(v["modelConfigs"]["maxTokens"].as_u64(), Some(99));
        assert_eq!(v["modelConfigs"]["topP"].as_f64(), Some(0.9));
        assert_eq!(v["modelConfigs"]["stopSequences"][0].as_str(), Some("END"));
    }

    #[test]
    fn the_next_turn_continues_the_committed_chain() {
        let first =
            conv(r#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}]}"#);
        assert_eq!(first.earlier, None);
        let committed = chain(first.turn, "assistant", "hello there");
        let second = conv(
            r#"{"model":"m","stream":true,"messages":[{"role":"system","content":"other"},{"role":"user","content":"hi"},
            {"role":"assistant","content":[{"type":"text","text":"hello "},{"type":"text","text":"there"}]},{"role":"user","content":"more"}]}"#,
        );
        assert_eq!(second.earlier, Some(committed));
        assert_ne!(second.turn, committed);
        let edited = conv(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"more"}]}"#,
        );
        assert_ne!(edited.earlier, Some(committed));
    }

    #[test]
    fn a_conversation_ending_with_the_assistant_is_refused() {
        let chat = read_chat(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"x"}]}"#,
            64,
        )
        .unwrap();
        assert!(Conversation::from_chat(&chat, "e").is_err());
    }
}
