//! One on-demand conversation on its way upstream: `Dialog` finds the live session that
//! continues it (and so the key to prefer), `Turn` is one attempt with one key (continue the
//! session, or open one and send the folded history), and `SessionCommit` records the grown
//! conversation once its answer ended well.
//! Invariant: a session is only ever queried with the key that created it; a turn on another
//! key opens its own session.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use sonic_rs::JsonValueTrait;

use super::request::{Conversation, CREATE_BODY};
use super::sessions::{chain, digest_of, Digest, Session, SessionRegistry, SessionTable};
use crate::config::{KeyId, Provider, SessionLimits};
use crate::providers::dialog::Step;
use crate::providers::transform::ResponseTransform;
use crate::providers::Translation;

/// Longest session id accepted from a create answer (it goes into the query path).
const MAX_SESSION_ID: usize = 128;

/// A conversation bound to its provider's session table.
pub struct Dialog {
    conv: Conversation,
    table: Arc<SessionTable>,
    /// Client and provider, hashed: conversations of different clients never share a session.
    scope: Digest,
    /// The live session continuing this conversation (its scoped digest and the session).
    live: Option<(Digest, Session)>,
}

impl Dialog {
    /// Looks up the session continuing `conv` for this client (`client` is its name, "" for
    /// an open gateway).
    pub fn open(conv: Conversation, registry: &SessionRegistry, provider: &Provider, client: &str) -> Dialog {
        let limits = provider.sessions.unwrap_or(SessionLimits {
            timeout: std::time::Duration::from_secs(1800),
            max: 10_000,
        });
        let table = registry.table(&provider.name, limits);
        let scope = digest_of((client, provider.name.as_str()));
        let live = conv.earlier.and_then(|earlier| {
            let digest = digest_of((scope, earlier));
            table.find(digest, Instant::now()).map(|s| (digest, s))
        });
        Dialog {
            conv,
            table,
            scope,
            live,
        }
    }

    /// The index of the key holding this conversation's session, tried first.
    pub fn pinned_key(&self, provider: &Provider) -> Option<usize> {
        let (_, session) = self.live.as_ref()?;
        provider.keys.iter().position(|k| k.id == session.key)
    }

    /// One attempt with the key `key`.
    pub fn turn(&self, key: KeyId) -> Turn<'_> {
        Turn {
            dialog: self,
            key,
            session: None,
            continued: false,
            restarted: false,
            create_retried: false,
        }
    }
}

/// One attempt of a conversation turn with one key.
pub struct Turn<'d> {
    dialog: &'d Dialog,
    key: KeyId,
    session: Option<String>,
    /// The query went to the live session (only the new turn was sent).
    continued: bool,
    /// A lost session was replaced once already.
    restarted: bool,
    /// A session create answered 404 once already.
    create_retried: bool,
}

impl Turn<'_> {
    /// The first request: the query on the live session when this key created it, else the
    /// session create.
    pub fn first(&mut self) -> Result<Step, String> {
        match &self.dialog.live {
            Some((_, s)) if s.key == self.key => {
                self.session = Some(s.id.clone());
                self.continued = true;
                self.dialog.table.reused.fetch_add(1, Ordering::Relaxed);
                self.query()
            }
            _ => Ok(create()),
        }
    }

    /// A session create answered 2xx with `body`: the query, history folded in.
    pub fn setup_answered(&mut self, body: &[u8]) -> Result<Step, String> {
        let id = sonic_rs::get(body, ["data", "id"])
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .or_else(|| {
                let v = sonic_rs::get(body, ["id"]).ok()?;
                v.as_str().map(str::to_owned)
            })
            .ok_or("the on-demand session create answer has no data.id")?;
        let clean = !id.is_empty()
            && id.len() <= MAX_SESSION_ID
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !clean {
            return Err("the on-demand session id is not a plain token".to_owned());
        }
        self.dialog.table.created.fetch_add(1, Ordering::Relaxed);
        self.session = Some(id);
        self.continued = false;
        self.query()
    }

    /// A request answered `status` other than a setup's success: the step that replaces that
    /// answer, or `None` when it is the attempt's answer. A 404 to a continued session means
    /// on-demand forgot it (expired or unknown): once, open a new session and send the folded
    /// history instead. A 404 to a session create ("no Route matched", seen transiently) is
    /// retried once.
    pub fn answered(&mut self, setup: bool, status: u16) -> Option<Step> {
        if status != 404 {
            return None;
        }
        if setup {
            if self.create_retried {
                return None;
            }
            self.create_retried = true;
            return Some(create());
        }
        if !self.continued || self.restarted {
            return None;
        }
        self.restarted = true;
        self.continued = false;
        if let Some((digest, _)) = &self.dialog.live {
            self.dialog.table.lost(*digest);
        }
        Some(create())
    }

    fn query(&self) -> Result<Step, String> {
        let id = self.session.as_deref().unwrap_or_default();
        Ok(Step {
            path: format!("/sessions/{id}/query"),
            body: self.dialog.conv.body(!self.continued)?,
            setup: false,
        })
    }

    /// The client-side transform of the final answer; it commits the session when the
    /// answer ends well.
    pub fn transform(self, translation: &Translation, status: u16) -> Box<dyn ResponseTransform> {
        let conv = &self.dialog.conv;
        let prompt_chars = if self.continued {
            conv.query.len()
        } else {
            conv.folded.len()
        };
        let commit = self.session.map(|id| SessionCommit {
            table: self.dialog.table.clone(),
            scope: self.dialog.scope,
            replaces: self.dialog.live.as_ref().map(|(d, _)| *d),
            continued: self.continued,
            turn: conv.turn,
            session: Session { id, key: self.key },
        });
        super::transform(translation, status, prompt_chars, commit)
    }
}

fn create() -> Step {
    Step {
        path: "/sessions".to_owned(),
        body: bytes::Bytes::from_static(CREATE_BODY),
        setup: true,
    }
}

/// What a well-ended answer records: its session now continues the conversation grown by the
/// new turn and the answer.
pub struct SessionCommit {
    table: Arc<SessionTable>,
    scope: Digest,
    /// The entry of the conversation this turn grew from (replaced).
    replaces: Option<Digest>,
    continued: bool,
    turn: Digest,
    session: Session,
}

impl SessionCommit {
    /// The answer ended well with this text.
    pub fn answered(self, answer: &str) {
        let next = digest_of((self.scope, chain(self.turn, "assistant", answer)));
        self.table.insert(next, self.session, self.replaces, Instant::now());
    }

    /// The answer failed midway: a continued session's history is now uncertain.
    pub fn failed(self) {
        if let (true, Some(digest)) = (self.continued, self.replaces) {
            self.table.forget(digest);
        }
    }
}
