//! The browser adapter in headless Chromium against a real `cloudsignal serve` over WebSocket
//! (started by `cargo xtask test`, which passes its URL and a token at build time): binary
//! framing both ways, timers (keep-alive, refresh), token refresh over AUTH, fatal token errors.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, missing_docs)]

use cloudsignal_client::Client;
use js_sys::{Date, Function, Object, Promise, Reflect};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const URL: Option<&str> = option_env!("CLOUDSIGNAL_TEST_WS_URL");
const USERNAME: Option<&str> = option_env!("CLOUDSIGNAL_TEST_USERNAME");
const TOKEN: Option<&str> = option_env!("CLOUDSIGNAL_TEST_TOKEN");

fn set(o: &Object, k: &str, v: impl Into<JsValue>) {
    Reflect::set(o, &k.into(), &v.into()).unwrap();
}

async fn sleep(ms: i32) {
    let p = Promise::new(&mut |resolve, _| {
        web_sys::window()
            .unwrap()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .unwrap();
    });
    JsFuture::from(p).await.unwrap();
}

/// The normalized token `pkg/index.js` hands the adapter; refresh due `refresh_in_ms` from now.
fn token(refresh_in_ms: f64) -> Object {
    let t = Object::new();
    set(&t, "username", USERNAME.unwrap());
    set(&t, "password", TOKEN.unwrap());
    set(&t, "expiresAt", Date::now() + 600_000.0);
    set(&t, "refreshAt", Date::now() + refresh_in_ms);
    set(&t, "wssUrl", URL.unwrap());
    t
}

type Log = Rc<RefCell<Vec<(String, JsValue)>>>;
type Source = Closure<dyn FnMut() -> Promise>;

/// A token source whose first token asks for a refresh after `first_refresh_ms` and later ones
/// much later; counts its calls. Keep the closure alive while the client runs.
fn refreshing_source(first_refresh_ms: f64) -> (Function, Rc<RefCell<u32>>, Source) {
    let fetches = Rc::new(RefCell::new(0));
    let n = fetches.clone();
    let source = Closure::wrap(Box::new(move || {
        *n.borrow_mut() += 1;
        let refresh = if *n.borrow() == 1 {
            first_refresh_ms
        } else {
            300_000.0
        };
        Promise::resolve(&JsValue::from(token(refresh)))
    }) as Box<dyn FnMut() -> Promise>);
    let f = source.as_ref().unchecked_ref::<Function>().clone();
    (f, fetches, source)
}
type Emit = Closure<dyn FnMut(String, JsValue)>;

fn client(get_token: &Function, extra: &[(&str, JsValue)]) -> (Client, Log, Emit) {
    let log: Log = Rc::default();
    let sink = log.clone();
    let emit = Closure::wrap(Box::new(move |kind: String, detail: JsValue| {
        sink.borrow_mut().push((kind, detail));
    }) as Box<dyn FnMut(String, JsValue)>);
    let options = Object::new();
    set(&options, "clientId", format!("wasm-test-{}", Date::now()));
    set(&options, "getToken", get_token.clone());
    set(&options, "emit", emit.as_ref().clone());
    for (k, v) in extra {
        set(&options, k, v.clone());
    }
    (Client::new(&options).unwrap(), log, emit)
}

fn count(log: &Log, kind: &str) -> usize {
    log.borrow().iter().filter(|(k, _)| k == kind).count()
}

fn field(v: &JsValue, k: &str) -> JsValue {
    Reflect::get(v, &k.into()).unwrap()
}

async fn until(log: &Log, what: &str, pred: impl Fn(&Log) -> bool) {
    for _ in 0..100 {
        if pred(log) {
            return;
        }
        sleep(50).await;
    }
    let kinds: Vec<String> = log.borrow().iter().map(|(k, _)| k.clone()).collect();
    panic!("timed out waiting for {what}; events: {kinds:?}");
}

fn user() -> String {
    USERNAME.unwrap().split('@').next().unwrap().to_owned()
}

#[wasm_bindgen_test]
async fn binary_frames_both_ways_and_a_refresh_over_auth() {
    assert!(
        URL.is_some(),
        "no broker: run these tests through `cargo xtask test`, which starts one"
    );
    let (f, fetches, _source) = refreshing_source(1_500.0);
    let (c, log, _emit) = client(&f, &[("keepAlive", JsValue::from(1))]);
    let topic = format!("users/{}/adapter", user());
    c.subscribe(&topic, 1).unwrap();
    c.connect();
    until(&log, "the subscription", |l| count(l, "subscribed") == 1).await;
    assert_eq!(c.state(), "connected");
    // a payload with every byte value, including 0x00 and invalid UTF-8
    let payload: Vec<u8> = (0..=255u8).collect();
    c.publish(&topic, &payload, 1, false).unwrap();
    until(&log, "the echo", |l| count(l, "message") == 1).await;
    let msg = log
        .borrow()
        .iter()
        .find(|(k, _)| k == "message")
        .unwrap()
        .1
        .clone();
    let got = js_sys::Uint8Array::new(&field(&msg, "payload")).to_vec();
    assert_eq!(got, payload);
    assert_eq!(field(&msg, "qos").as_f64(), Some(1.0));
    until(&log, "the QoS 1 acknowledgement", |l| {
        count(l, "delivered") == 1
    })
    .await;
    // the same topic again goes as a topic alias (the broker allows them): the broker resolves
    // it and the echo carries the topic name
    c.publish(&topic, b"again", 1, false).unwrap();
    c.publish(&topic, b"and again", 0, false).unwrap();
    until(&log, "the aliased echoes", |l| count(l, "message") == 3).await;
    let echoes: Vec<(String, Vec<u8>)> = log
        .borrow()
        .iter()
        .filter(|(k, _)| k == "message")
        .skip(1)
        .map(|(_, d)| {
            (
                field(d, "topic").as_string().unwrap(),
                js_sys::Uint8Array::new(&field(d, "payload")).to_vec(),
            )
        })
        .collect();
    assert_eq!(
        echoes,
        [
            (topic.clone(), b"again".to_vec()),
            (topic.clone(), b"and again".to_vec())
        ]
    );
    // refresh timer → getToken → AUTH on the open connection
    until(&log, "a refresh over AUTH", |l| count(l, "token") == 1).await;
    assert_eq!(
        field(
            &log.borrow().iter().find(|(k, _)| k == "token").unwrap().1,
            "via"
        )
        .as_string()
        .as_deref(),
        Some("auth")
    );
    assert_eq!(*fetches.borrow(), 2);
    // keep-alive 1 s: three seconds of silence are bridged by PINGREQs, not a reconnect
    sleep(3_000).await;
    assert_eq!(c.state(), "connected");
    let states: Vec<String> = log
        .borrow()
        .iter()
        .filter(|(k, _)| k == "state")
        .map(|(_, d)| field(d, "state").as_string().unwrap())
        .collect();
    assert_eq!(states, ["connecting", "connected"]);
    c.disconnect();
    assert_eq!(c.state(), "closed");
}

#[wasm_bindgen_test]
async fn a_fatal_token_error_stops_without_retrying() {
    let calls = Rc::new(RefCell::new(0));
    let n = calls.clone();
    let get_token = Closure::wrap(Box::new(move || {
        *n.borrow_mut() += 1;
        let err = js_sys::Error::new("HTTP 403 user_revoked");
        Reflect::set(&err, &"fatal".into(), &JsValue::TRUE).unwrap();
        Promise::reject(&err)
    }) as Box<dyn FnMut() -> Promise>);
    let f: Function = get_token.as_ref().unchecked_ref::<Function>().clone();
    let (c, log, _emit) = client(&f, &[]);
    c.connect();
    until(&log, "the fatal state", |_| c.state() == "fatal").await;
    sleep(1_500).await;
    assert_eq!(*calls.borrow(), 1, "no retry after a fatal refusal");
    let err = log
        .borrow()
        .iter()
        .find(|(k, _)| k == "token-error")
        .unwrap()
        .1
        .clone();
    assert_eq!(field(&err, "fatal").as_bool(), Some(true));
}

#[wasm_bindgen_test]
async fn a_transient_token_error_is_retried_with_backoff() {
    let calls = Rc::new(RefCell::new(0));
    let n = calls.clone();
    let get_token = Closure::wrap(Box::new(move || {
        *n.borrow_mut() += 1;
        Promise::reject(&js_sys::Error::new("HTTP 503"))
    }) as Box<dyn FnMut() -> Promise>);
    let f: Function = get_token.as_ref().unchecked_ref::<Function>().clone();
    let (c, log, _emit) = client(&f, &[]);
    c.connect();
    // backoff from 1 s: the second attempt comes after 0.5–1 s, not at once
    sleep(300).await;
    assert_eq!(*calls.borrow(), 1);
    until(&log, "a retry", |_| *calls.borrow() >= 2).await;
    assert_ne!(c.state(), "fatal");
    assert!(count(&log, "token-error") >= 2);
    c.disconnect();
}

#[wasm_bindgen_test]
async fn mqtt_3_1_1_refreshes_by_reconnecting_into_its_session() {
    assert!(
        URL.is_some(),
        "no broker: run these tests through `cargo xtask test`, which starts one"
    );
    let (f, fetches, _source) = refreshing_source(1_000.0);
    let (c, log, _emit) = client(&f, &[("protocolVersion", JsValue::from(4))]);
    let topic = format!("users/{}/v311", user());
    c.subscribe(&topic, 1).unwrap();
    c.connect();
    until(&log, "the subscription", |l| count(l, "subscribed") == 1).await;
    // no AUTH in 3.1.1: the refresh reconnects with the new token, resuming the session
    until(&log, "the second connection", |_| {
        *fetches.borrow() == 2 && c.state() == "connected"
    })
    .await;
    let connected: Vec<bool> = log
        .borrow()
        .iter()
        .filter(|(k, d)| {
            k == "state" && field(d, "state").as_string().as_deref() == Some("connected")
        })
        .map(|(_, d)| field(d, "sessionPresent").as_bool().unwrap())
        .collect();
    assert_eq!(
        connected,
        [false, true],
        "the second connection resumed the session"
    );
    assert_eq!(
        count(&log, "token"),
        0,
        "no AUTH re-authentication in 3.1.1"
    );
    c.publish(&topic, b"after the swap", 1, false).unwrap();
    until(&log, "the message", |l| count(l, "message") == 1).await;
    c.disconnect();
}
