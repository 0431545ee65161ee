//! Each stream translator, fed arbitrary bytes in fuzzer-chosen pieces, never panics, emits
//! only well-formed SSE whose every `data:` payload is JSON or `[DONE]`, and ends with exactly
//! one terminator, also when an event nests deeper than the depth bound (it ends the stream
//! with the error event). The first byte picks the translator (mod 8: Anthropic -> chat,
//! chat -> Anthropic, Gemini -> chat, chat -> Responses events, on-demand.io -> chat, the
//! Gemini door's chat -> Gemini, whose terminator is the one chunk with a `finishReason`,
//! Replicate with its usage read after `done`, Cohere -> chat) and the piece size (its upper
//! six bits).
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rotor::codec::DEFAULT_MAX_DEPTH as D;
use rotor::providers::anthropic::front_stream::OpenAiToAnthropic;
use rotor::providers::anthropic::stream::AnthropicToOpenAi;
use rotor::providers::cohere::stream::CohereToOpenAi;
use rotor::providers::gemini::front_stream::OpenAiToGemini;
use rotor::providers::gemini::stream::GeminiToOpenAi;
use rotor::providers::ondemand::stream::OnDemandToOpenAi;
use rotor::providers::replicate::stream::ReplicateToOpenAi;
use rotor::providers::responses::stream::ChatToResponses;
use rotor::providers::SseTranslator;
use rotor::providers::transform::ResponseTransform;
use sonic_rs::JsonValueTrait;

fn check(t: &mut dyn ResponseTransform, body: &[u8], step: usize) {
    run(t, body, step, false)
}

fn check_fetching(t: &mut dyn ResponseTransform, body: &[u8], step: usize) {
    run(t, body, step, true)
}

fn run(t: &mut dyn ResponseTransform, body: &[u8], step: usize, fetch: bool) {
    let mut out = Vec::new();
    for piece in body.chunks(step.max(1)) {
        for b in t.piece(Bytes::copy_from_slice(piece)) {
            out.extend_from_slice(&b);
        }
    }
    if fetch && t.fetch_at_end().is_some() {
        t.fetched(Some(body));
        assert!(t.fetch_at_end().is_none(), "the usage is read once");
    }
    for b in t.end() {
        out.extend_from_slice(&b);
    }
    let text = std::str::from_utf8(&out).expect("output is UTF-8");
    assert!(text.is_empty() || text.ends_with("\n\n"));
    let mut terminators = 0;
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        let data = event.lines().find_map(|l| l.strip_prefix("data: ")).expect("every event has data");
        let name = event.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("");
        if data == "[DONE]" {
            terminators += 1;
            continue;
        }
        let v: sonic_rs::Value = sonic_rs::from_str(data).expect("data is JSON");
        let openai_error = name.is_empty() && v.get("error").is_some();
        // The Gemini door's last chunk is the only one with a finishReason.
        let first = v.get("candidates").and_then(|c| c.get(0));
        let gemini_last = first.and_then(|c| c.get("finishReason")).is_some();
        let responses_end = matches!(name, "response.completed" | "response.incomplete" | "response.failed");
        if openai_error || responses_end || gemini_last || name == "message_stop" || name == "error" {
            terminators += 1;
        }
    }
    assert_eq!(terminators, 1, "{text}");
}

fuzz_target!(|input: &[u8]| {
    let Some((&pick, body)) = input.split_first() else { return };
    let step = (pick >> 2) as usize + 1;
    // The seeds' first bytes pick their translators (corpus files named after them).
    match pick % 8 {
        0 => check(&mut SseTranslator::new(AnthropicToOpenAi::new("m", true), D), body, step),
        1 => check(&mut SseTranslator::new(OpenAiToAnthropic::new("m"), D), body, step),
        2 => check(&mut SseTranslator::new(GeminiToOpenAi::new("m", true), D), body, step),
        3 => check(&mut SseTranslator::new(ChatToResponses::new("m"), D), body, step),
        4 => check(&mut SseTranslator::new(OnDemandToOpenAi::new("m", true, 8, None), D), body, step),
        5 => check(&mut SseTranslator::new(OpenAiToGemini::new("m", D), D), body, step),
        6 => {
            // The usage read after `done` is answered with the input itself (any bytes).
            let mut t = SseTranslator::new(ReplicateToOpenAi::new("m", true, Some("u".into())), D);
            check_fetching(&mut t, body, step)
        }
        _ => check(&mut SseTranslator::new(CohereToOpenAi::new("m", true), D), body, step),
    }
});
