//! Account-scoped objects of the mock: OpenAI files (`POST /v1/files` multipart, `GET`,
//! `/content`, `DELETE`) and batches (`POST /v1/batches` naming an `input_file_id`, `GET`,
//! `POST .../cancel` with an empty body). Each object remembers the key that created it.
//! Invariant: an object is visible only to its creating key (any other key gets a 404, as an
//! upstream account would answer); the table holds at most `MAX_OBJECTS` (oldest dropped).
//! Ids the mock never made, and routes it does not know, fall through to the echo answer.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use ahash::AHashMap;
use bytes::Bytes;
use parking_lot::Mutex;

use crate::codec::head::Method;
use crate::codec::json::multipart_field;
use crate::server::{Request, Responder};

const JSON: (&str, &[u8]) = ("content-type", b"application/json");
const MAX_OBJECTS: usize = 10_000;

struct Object {
    key: String,
    /// The file's bytes, or the batch's current JSON.
    body: Bytes,
    input_file_id: String,
}

/// Files and batches the mock created, shared by its workers.
#[derive(Default)]
pub struct MockObjects {
    table: Mutex<(AHashMap<String, Object>, VecDeque<String>)>,
    next: AtomicU64,
}

impl MockObjects {
    fn insert(&self, id: &str, object: Object) {
        let mut guard = self.table.lock();
        let (map, order) = &mut *guard;
        if map.len() >= MAX_OBJECTS {
            if let Some(oldest) = order.pop_front() {
                map.remove(&oldest);
            }
        }
        map.insert(id.to_owned(), object);
        order.push_back(id.to_owned());
    }

    /// The object `id` when `key` created it.
    fn owned(&self, id: &str, key: &str) -> Option<(Bytes, String)> {
        let guard = self.table.lock();
        guard
            .0
            .get(id)
            .filter(|o| o.key == key)
            .map(|o| (o.body.clone(), o.input_file_id.clone()))
    }

    fn exists(&self, id: &str) -> bool {
        self.table.lock().0.contains_key(id)
    }

    fn remove(&self, id: &str, key: &str) -> bool {
        let mut guard = self.table.lock();
        if guard.0.get(id).is_some_and(|o| o.key == key) {
            guard.0.remove(id);
            return true;
        }
        false
    }

    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Answers a files or batches request about an object the mock knows; `false` = not one
/// (the caller echoes).
pub(super) async fn answer(
    req: &Request,
    key: &str,
    objects: &MockObjects,
    res: &mut Responder<'_>,
) -> io::Result<bool> {
    let path = req.head.path();
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Ok(false);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let method = req.head.method;
    let known = match segments.as_slice() {
        ["files" | "batches"] => method == Method::Post,
        [_, id, ..] => objects.exists(id),
        _ => false,
    };
    if !known || !matches!(segments.first(), Some(&"files" | &"batches")) {
        return Ok(false);
    }
    let answer = match (method, segments.as_slice()) {
        (Method::Post, ["files"]) => create_file(req, key, objects),
        (Method::Get, ["files", id]) => objects.owned(id, key).map(|(body, _)| file_json(id, body.len())),
        (Method::Get, ["files", id, "content"]) => {
            match objects.owned(id, key) {
                Some((body, _)) => {
                    res.send(200, &[("content-type", b"application/octet-stream")], body)
                        .await?
                }
                None => not_found(res, id).await?,
            }
            return Ok(true);
        }
        (Method::Delete, ["files", id]) => objects
            .remove(id, key)
            .then(|| format!(r#"{{"id":"{id}","object":"file","deleted":true}}"#)),
        (Method::Post, ["batches"]) => create_batch(req, key, objects),
        (Method::Get, ["batches", id]) => objects
            .owned(id, key)
            .map(|(_, file)| batch_json(id, &file, "validating")),
        (Method::Post, ["batches", id, "cancel"]) => objects
            .owned(id, key)
            .map(|(_, file)| batch_json(id, &file, "cancelling")),
        _ => return Ok(false),
    };
    match answer {
        Some(json) => res.send(200, &[JSON], Bytes::from(json)).await?,
        None => not_found(res, segments.get(1).copied().unwrap_or("")).await?,
    }
    Ok(true)
}

async fn not_found(res: &mut Responder<'_>, id: &str) -> io::Result<()> {
    let id: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let body = format!(
        r#"{{"error":{{"message":"No such object: '{id}' (mock: not created with this key)","type":"invalid_request_error","param":null,"code":null}}}}"#
    );
    res.send(404, &[JSON], Bytes::from(body)).await
}

fn create_file(req: &Request, key: &str, objects: &MockObjects) -> Option<String> {
    let content_type = req.head.header("content-type").unwrap_or_default();
    let body = req.body.bytes();
    let content = multipart_field(&body, content_type, "file").unwrap_or(&[]);
    let id = format!("file-{}", objects.next_id());
    let object = Object {
        key: key.to_owned(),
        body: Bytes::copy_from_slice(content),
        input_file_id: String::new(),
    };
    let json = file_json(&id, content.len());
    objects.insert(&id, object);
    Some(json)
}

fn create_batch(req: &Request, key: &str, objects: &MockObjects) -> Option<String> {
    let file = sonic_rs::get(req.body.bytes().as_ref(), &["input_file_id"])
        .ok()
        .and_then(|v| sonic_rs::JsonValueTrait::as_str(&v).map(str::to_owned))?;
    // A file of another key (or none at all) is a 404, as the upstream account would say.
    objects.owned(&file, key)?;
    let id = format!("batch_{}", objects.next_id());
    let object = Object {
        key: key.to_owned(),
        body: Bytes::new(),
        input_file_id: file.clone(),
    };
    objects.insert(&id, object);
    Some(batch_json(&id, &file, "validating"))
}

fn file_json(id: &str, bytes: usize) -> String {
    format!(
        r#"{{"id":"{id}","object":"file","bytes":{bytes},"created_at":1700000000,"filename":"input.jsonl","purpose":"batch","status":"processed"}}"#
    )
}

fn batch_json(id: &str, input_file_id: &str, status: &str) -> String {
    let file: String = input_file_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    format!(
        r#"{{"id":"{id}","object":"batch","endpoint":"/v1/chat/completions","errors":null,"input_file_id":"{file}","completion_window":"24h","status":"{status}","created_at":1700000000}}"#
    )
}
