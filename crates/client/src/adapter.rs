//! The browser adapter: core's sans-IO [`ClientSession`] driven by a `web_sys::WebSocket`
//! (binary frames, subprotocol `mqtt`), `setTimeout` timers and an async token source.
//!
//! Everything protocol-related happens in core; this file only moves bytes, arms timers and
//! turns core's events into JavaScript events (`emit(type, detail)`). Re-entrancy: JavaScript
//! callbacks may call back into the client, so events are emitted only after the internal
//! state is released.

use cloudsignal_core::client::{
    Backoff, ClientConfig, ClientEvent, ClientSession, CloseKind, RefreshPlan,
};
use cloudsignal_core::mqtt::{Protocol, QoS, ReasonCode};
use js_sys::{Date, Function, Math, Object, Promise, Reflect, Uint8Array};
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, MessageEvent, WebSocket};

type Shared = Rc<RefCell<Inner>>;

fn now() -> u64 {
    // Date.now() is a non-negative integer number of milliseconds
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ms = Date::now() as u64;
    ms
}

fn random() -> f64 {
    Math::random()
}

/// Why a token is being fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Connect,
    Refresh,
}

#[derive(Default)]
struct Timers {
    keepalive: Option<i32>,
    refresh: Option<i32>,
    reconnect: Option<i32>,
}

/// A token response, normalized by `pkg/index.js` (`{username, password, expiresAt,
/// refreshAt, wssUrl}`, times in ms since the epoch).
struct Token {
    username: String,
    password: String,
    expires_at: u64,
    refresh_at: u64,
    wss_url: String,
}

struct Inner {
    session: ClientSession,
    get_token: Function,
    emit: Function,
    url: Option<String>,
    ws: Option<WebSocket>,
    handlers: Vec<Closure<dyn FnMut(JsValue)>>,
    generation: u32,
    token: Option<Token>,
    plan: Option<RefreshPlan>,
    reconnect: Backoff,
    refresh_backoff: Backoff,
    state: &'static str,
    timers: Timers,
    fetching: bool,
    stopped: bool,
    /// A v3.1.1 refresh: the socket is closed on purpose to reconnect with the new token.
    swap: bool,
    outbox: Vec<(&'static str, JsValue)>,
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), &value.into());
}

fn reason_detail(reason: Option<ReasonCode>, reason_string: Option<&str>) -> Object {
    let d = Object::new();
    match reason {
        Some(r) => {
            set(&d, "reason", r.0);
            set(&d, "reasonName", r.name().unwrap_or("Unknown"));
        }
        None => {
            set(&d, "reason", JsValue::NULL);
            set(&d, "reasonName", "Network error");
        }
    }
    if let Some(s) = reason_string {
        set(&d, "reasonString", s);
    }
    d
}

fn timeout(f: impl FnOnce() + 'static, ms: u64) -> Option<i32> {
    let window = web_sys::window()?;
    let cb = Closure::once_into_js(f);
    #[allow(clippy::cast_possible_truncation)]
    let ms = ms.min(i32::MAX as u64) as i32;
    window
        .set_timeout_with_callback_and_timeout_and_arguments_0(cb.unchecked_ref(), ms)
        .ok()
}

fn clear(handle: &mut Option<i32>) {
    if let (Some(h), Some(w)) = (handle.take(), web_sys::window()) {
        w.clear_timeout_with_handle(h);
    }
}

impl Inner {
    fn set_state(&mut self, state: &'static str, detail: Object) {
        self.state = state;
        set(&detail, "state", state);
        self.outbox.push(("state", detail.into()));
    }

    fn token_detail(&self, via: &str) -> Object {
        let d = Object::new();
        if let Some(t) = &self.token {
            #[allow(clippy::cast_precision_loss)]
            {
                set(&d, "expiresAt", t.expires_at as f64);
                set(&d, "refreshAt", t.refresh_at as f64);
            }
            set(&d, "username", t.username.as_str());
        }
        set(&d, "via", via);
        d
    }

    fn token_usable(&self, now: u64) -> bool {
        self.plan.is_some_and(|p| !p.expired(now + 1_000))
    }

    fn close_socket(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if let Some(ws) = self.ws.take() {
            ws.set_onopen(None);
            ws.set_onmessage(None);
            ws.set_onclose(None);
            ws.set_onerror(None);
            let _ = ws.close();
        }
        self.handlers.clear();
        clear(&mut self.timers.keepalive);
    }
}

/// Emits what the last step queued, outside any borrow.
fn flush_emits(this: &Shared) {
    let (emit, outbox) = {
        let mut inner = this.borrow_mut();
        (inner.emit.clone(), std::mem::take(&mut inner.outbox))
    };
    for (kind, detail) in outbox {
        let _ = emit.call2(&JsValue::NULL, &JsValue::from_str(kind), &detail);
    }
}

/// Writes what the session wants to send, handles its events, re-arms the keep-alive timer.
fn drive(this: &Shared) {
    let mut reconnect_in = None;
    let mut refresh = false;
    {
        let mut inner = this.borrow_mut();
        let bytes = inner.session.take_outgoing();
        if !bytes.is_empty() {
            if let Some(ws) = &inner.ws {
                let _ = ws.send_with_u8_array(&bytes);
            }
        }
        while let Some(ev) = inner.session.poll_event() {
            match ev {
                ClientEvent::Connected { session_present } => {
                    inner.reconnect.reset();
                    let d = Object::new();
                    set(&d, "sessionPresent", session_present);
                    inner.set_state("connected", d);
                    refresh = true;
                }
                ClientEvent::Message {
                    topic,
                    payload,
                    qos,
                    retain,
                } => {
                    let d = Object::new();
                    set(&d, "topic", topic.as_str());
                    set(&d, "payload", Uint8Array::from(payload.as_slice()));
                    set(&d, "qos", qos as u8);
                    set(&d, "retain", retain);
                    inner.outbox.push(("message", d.into()));
                }
                ClientEvent::Subscribed { filter, result } => {
                    let (kind, d) = match result {
                        Ok(q) => {
                            let d = Object::new();
                            set(&d, "qos", q as u8);
                            ("subscribed", d)
                        }
                        Err(r) => ("subscribe-error", reason_detail(Some(r), None)),
                    };
                    set(&d, "filter", filter.as_str());
                    inner.outbox.push((kind, d.into()));
                }
                ClientEvent::Unsubscribed { filter } => {
                    let d = Object::new();
                    set(&d, "filter", filter.as_str());
                    inner.outbox.push(("unsubscribed", d.into()));
                }
                ClientEvent::Delivered { topic, result } => {
                    let d = reason_detail(result.err(), None);
                    set(&d, "topic", topic.as_str());
                    set(&d, "ok", result.is_ok());
                    inner.outbox.push(("delivered", d.into()));
                }
                ClientEvent::Reauthenticated => {
                    let d = inner.token_detail("auth");
                    inner.outbox.push(("token", d.into()));
                }
                ClientEvent::Disconnected {
                    reason,
                    reason_string,
                    kind,
                } => {
                    inner.close_socket();
                    let d = reason_detail(reason, reason_string.as_deref());
                    if reason == Some(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION)
                        && inner.session.protocol() == Protocol::V5
                    {
                        // an MQTT 3.1.1 broker: speak 3.1.1 from now on
                        inner.session.set_protocol(Protocol::V311);
                        reconnect_in = Some(0);
                        inner.set_state("reconnecting", d);
                    } else if inner.stopped {
                        inner.set_state("closed", d);
                    } else if kind == CloseKind::Fatal {
                        inner.stopped = true;
                        clear(&mut inner.timers.refresh);
                        clear(&mut inner.timers.reconnect);
                        inner.set_state("fatal", d);
                    } else {
                        if reason == Some(ReasonCode(0xA0)) {
                            // token expired: a new one first
                            inner.plan = None;
                        }
                        let delay = if std::mem::take(&mut inner.swap) {
                            0
                        } else {
                            inner.reconnect.next_delay(random())
                        };
                        set(&d, "retryInMs", delay as f64);
                        inner.set_state("reconnecting", d);
                        reconnect_in = Some(delay);
                    }
                }
                _ => {}
            }
        }
        clear(&mut inner.timers.keepalive);
        if let Some(due) = inner.session.next_timeout() {
            let weak = Rc::downgrade(this);
            inner.timers.keepalive = timeout(
                move || {
                    if let Some(this) = weak.upgrade() {
                        this.borrow_mut().session.handle_timeout(now());
                        drive(&this);
                    }
                },
                due.saturating_sub(now()),
            );
        }
    }
    if refresh {
        schedule_refresh(this);
    }
    if let Some(delay) = reconnect_in {
        schedule_reconnect(this, delay);
    }
    flush_emits(this);
}

fn schedule_reconnect(this: &Shared, delay: u64) {
    let weak = Rc::downgrade(this);
    let mut inner = this.borrow_mut();
    clear(&mut inner.timers.reconnect);
    inner.timers.reconnect = timeout(
        move || {
            if let Some(this) = weak.upgrade() {
                this.borrow_mut().timers.reconnect = None;
                start(&this);
            }
        },
        delay,
    );
}

fn schedule_refresh(this: &Shared) {
    let weak = Rc::downgrade(this);
    let mut inner = this.borrow_mut();
    clear(&mut inner.timers.refresh);
    let Some(plan) = inner.plan else { return };
    let t = now();
    inner.timers.refresh = timeout(
        move || {
            if let Some(this) = weak.upgrade() {
                this.borrow_mut().timers.refresh = None;
                fetch_token(&this, Purpose::Refresh);
            }
        },
        plan.due(t).saturating_sub(t),
    );
}

/// Connects: with the current token if it is still good, else after fetching one.
fn start(this: &Shared) {
    let usable = {
        let inner = this.borrow();
        if inner.stopped || inner.ws.is_some() {
            return;
        }
        inner.token_usable(now())
    };
    if usable {
        open_socket(this);
    } else {
        fetch_token(this, Purpose::Connect);
    }
}

fn open_socket(this: &Shared) {
    let opened = {
        let mut inner = this.borrow_mut();
        let Some(token) = &inner.token else { return };
        let url = inner.url.clone().unwrap_or_else(|| token.wss_url.clone());
        inner.close_socket();
        let generation = inner.generation;
        match WebSocket::new_with_str(&url, "mqtt") {
            Ok(ws) => {
                ws.set_binary_type(BinaryType::Arraybuffer);
                let weak = Rc::downgrade(this);
                let on_open = handler(&weak, generation, |this, _| {
                    let (user, pass) = {
                        let inner = this.borrow();
                        match &inner.token {
                            Some(t) => (t.username.clone(), t.password.clone()),
                            None => return,
                        }
                    };
                    this.borrow_mut().session.connect(&user, &pass, now());
                    drive(this);
                });
                let on_message = handler(&weak, generation, |this, ev| {
                    if let Some(ev) = ev.dyn_ref::<MessageEvent>() {
                        let bytes = Uint8Array::new(&ev.data()).to_vec();
                        this.borrow_mut().session.handle_bytes(&bytes, now());
                        drive(this);
                    }
                });
                let on_close = handler(&weak, generation, |this, _| {
                    this.borrow_mut().session.connection_lost(now());
                    drive(this);
                });
                ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
                ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
                ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
                inner.handlers = vec![on_open, on_message, on_close];
                inner.ws = Some(ws);
                if inner.state != "connecting" {
                    // (after a token fetch the app already saw `connecting`: one event per
                    // attempt)
                    let d = Object::new();
                    set(&d, "url", url.as_str());
                    inner.set_state("connecting", d);
                }
                true
            }
            Err(_) => {
                inner.stopped = true;
                let d = reason_detail(None, Some(&format!("cannot open a WebSocket to {url}")));
                inner.set_state("fatal", d);
                false
            }
        }
    };
    let _ = opened;
    flush_emits(this);
}

/// A WebSocket callback that ignores events from sockets replaced since.
fn handler(
    weak: &Weak<RefCell<Inner>>,
    generation: u32,
    f: impl Fn(&Shared, JsValue) + 'static,
) -> Closure<dyn FnMut(JsValue)> {
    let weak = weak.clone();
    Closure::wrap(Box::new(move |ev: JsValue| {
        if let Some(this) = weak.upgrade() {
            if this.borrow().generation == generation {
                f(&this, ev);
            }
        }
    }) as Box<dyn FnMut(JsValue)>)
}

/// Reads the normalized token `pkg/index.js` resolves to.
fn parse_token(value: &JsValue) -> Result<Token, String> {
    let text = |k: &str| {
        Reflect::get(value, &JsValue::from_str(k))
            .ok()
            .and_then(|v| v.as_string())
            .ok_or_else(|| format!("token: {k} missing"))
    };
    let time = |k: &str| {
        Reflect::get(value, &JsValue::from_str(k))
            .ok()
            .and_then(|v| v.as_f64())
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map(|t| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let ms = t as u64;
                ms
            })
            .ok_or_else(|| format!("token: {k} missing"))
    };
    Ok(Token {
        username: text("username")?,
        password: text("password")?,
        expires_at: time("expiresAt")?,
        refresh_at: time("refreshAt")?,
        wss_url: text("wssUrl")?,
    })
}

fn fetch_token(this: &Shared, purpose: Purpose) {
    let get_token = {
        let mut inner = this.borrow_mut();
        if inner.fetching || inner.stopped {
            return;
        }
        inner.fetching = true;
        if purpose == Purpose::Connect && !matches!(inner.state, "connecting" | "reconnecting") {
            // the token comes first: the app sees the attempt start, not an `idle` client
            let d = Object::new();
            set(&d, "phase", "token");
            inner.set_state("connecting", d);
        }
        inner.get_token.clone()
    };
    flush_emits(this);
    let this = this.clone();
    let settled = move |result: Result<JsValue, JsValue>| {
        this.borrow_mut().fetching = false;
        match result
            .map_err(|e| (e.clone(), error_message(&e)))
            .and_then(|v| parse_token(&v).map_err(|m| (JsValue::NULL, m)))
        {
            Ok(token) => on_token(&this, token, purpose),
            Err((err, message)) => on_token_error(&this, &err, &message, purpose),
        }
        flush_emits(&this);
    };
    match get_token.call0(&JsValue::NULL) {
        Ok(value) => when_settled(&value, settled),
        Err(e) => settled(Err(e)),
    }
}

/// Calls `f` once `value` (a promise or a plain value) settles, with its value or its
/// rejection. Through `Promise.allSettled`, which never rejects, so the one callback always
/// runs (and is freed) however the promise ends; no async runtime is needed for it.
fn when_settled(value: &JsValue, f: impl FnOnce(Result<JsValue, JsValue>) + 'static) {
    let all = Promise::all_settled(&js_sys::Array::of1(value));
    let callback = Closure::once_into_js(move |results: JsValue| {
        let outcome = Reflect::get(&results, &JsValue::from(0)).unwrap_or(JsValue::UNDEFINED);
        let field =
            |k: &str| Reflect::get(&outcome, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED);
        if field("status").as_string().as_deref() == Some("fulfilled") {
            f(Ok(field("value")));
        } else {
            f(Err(field("reason")));
        }
    });
    if let Ok(then) = Reflect::get(&all, &JsValue::from_str("then")) {
        let _ = then.unchecked_ref::<Function>().call1(&all, &callback);
    }
}

fn error_message(e: &JsValue) -> String {
    Reflect::get(e, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string())
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "getToken() failed".to_owned())
}

fn on_token(this: &Shared, token: Token, purpose: Purpose) {
    let reauthed = {
        let mut inner = this.borrow_mut();
        inner.plan = Some(RefreshPlan::new(token.refresh_at, token.expires_at));
        let password = token.password.clone();
        inner.token = Some(token);
        inner.refresh_backoff.reset();
        let d = inner.token_detail("fetch");
        inner.outbox.push(("token-fetched", d.into()));
        match purpose {
            Purpose::Connect => None,
            Purpose::Refresh => {
                let t = now();
                Some(inner.session.reauthenticate(&password, t))
            }
        }
    };
    match (purpose, reauthed) {
        (Purpose::Connect, _) => open_socket(this),
        (Purpose::Refresh, Some(true)) => {
            drive(this);
            schedule_refresh(this);
        }
        (Purpose::Refresh, _) => {
            // no re-authentication here (MQTT 3.1.1, or offline): reconnect with the new
            // token, resuming the session
            enum Next {
                Swap,
                Open,
                Later,
            }
            let next = {
                let mut inner = this.borrow_mut();
                if inner.session.is_connected() {
                    inner.swap = true;
                    inner.session.connection_lost(now());
                    Next::Swap
                } else if inner.ws.is_none() && !inner.stopped {
                    // offline (a reconnect may have found this fetch in flight and waited):
                    // connect now with the new token
                    clear(&mut inner.timers.reconnect);
                    Next::Open
                } else {
                    // a connection attempt is under way with a still-valid token
                    Next::Later
                }
            };
            match next {
                Next::Swap => drive(this),
                Next::Open => open_socket(this),
                Next::Later => schedule_refresh(this),
            }
        }
    }
}

fn on_token_error(this: &Shared, err: &JsValue, message: &str, purpose: Purpose) {
    let fatal = Reflect::get(err, &JsValue::from_str("fatal"))
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let (retry, delay) = {
        let mut inner = this.borrow_mut();
        let d = Object::new();
        set(&d, "message", message);
        set(&d, "fatal", fatal);
        inner.outbox.push(("token-error", d.into()));
        if fatal {
            inner.stopped = true;
            inner.close_socket();
            clear(&mut inner.timers.refresh);
            let d = reason_detail(None, Some(message));
            set(&d, "reasonName", "Token refused");
            inner.set_state("fatal", d);
            return;
        }
        let t = now();
        let delay = inner.refresh_backoff.next_delay(random());
        match (purpose, inner.plan) {
            (Purpose::Refresh, Some(plan)) => (Purpose::Refresh, plan.retry_at(t, delay) - t),
            _ => {
                // no connection without a token: say so, and when the next try is
                let d = Object::new();
                set(&d, "reason", JsValue::NULL);
                set(&d, "reasonName", "Token fetch failed");
                set(&d, "reasonString", message);
                set(&d, "phase", "token");
                set(&d, "retryInMs", delay as f64);
                inner.set_state("reconnecting", d);
                (Purpose::Connect, delay)
            }
        }
    };
    let weak = Rc::downgrade(this);
    let handle = timeout(
        move || {
            if let Some(this) = weak.upgrade() {
                match retry {
                    Purpose::Refresh => fetch_token(&this, Purpose::Refresh),
                    Purpose::Connect => start(&this),
                }
            }
        },
        delay,
    );
    let mut inner = this.borrow_mut();
    match retry {
        Purpose::Refresh => inner.timers.refresh = handle,
        Purpose::Connect => inner.timers.reconnect = handle,
    }
}

fn qos(q: u8) -> Result<QoS, JsError> {
    match q {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        _ => Err(JsError::new("qos must be 0, 1 or 2")),
    }
}

fn opt_u32(options: &JsValue, key: &str) -> Option<u32> {
    Reflect::get(options, &JsValue::from_str(key))
        .ok()
        .and_then(|v| v.as_f64())
        .filter(|v| *v >= 0.0 && *v <= f64::from(u32::MAX))
        .map(|v| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let n = v as u32;
            n
        })
}

/// An MQTT 5 client over WebSocket that fetches and refreshes its own tokens. Use it through
/// the package's `CloudSignalClient` (an `EventTarget`), which builds the options.
#[wasm_bindgen]
pub struct Client {
    inner: Shared,
}

#[wasm_bindgen]
impl Client {
    /// `options`: `{clientId, getToken: () => Promise<{username, password, expiresAt,
    /// refreshAt, wssUrl}>, emit: (type, detail) => void, url?, keepAlive?, sessionExpiry?,
    /// maxQueued?, protocolVersion?: 4 | 5}`.
    #[wasm_bindgen(constructor)]
    pub fn new(options: &JsValue) -> Result<Client, JsError> {
        let get =
            |k: &str| Reflect::get(options, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED);
        let get_token: Function = get("getToken")
            .dyn_into()
            .map_err(|_| JsError::new("options.getToken must be a function returning a Promise"))?;
        let emit: Function = get("emit")
            .dyn_into()
            .map_err(|_| JsError::new("options.emit must be a function"))?;
        let client_id = get("clientId")
            .as_string()
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .ok_or_else(|| {
                JsError::new("options.clientId must be a non-empty string (1-128 characters)")
            })?;
        let mut config = ClientConfig::new(client_id);
        if let Some(k) = opt_u32(options, "keepAlive") {
            config.keep_alive = u16::try_from(k).unwrap_or(u16::MAX);
        }
        if let Some(s) = opt_u32(options, "sessionExpiry") {
            config.session_expiry = s;
        }
        if let Some(q) = opt_u32(options, "maxQueued") {
            config.max_queued = q as usize;
        }
        if opt_u32(options, "protocolVersion") == Some(4) {
            config.protocol = Protocol::V311;
        }
        Ok(Client {
            inner: Rc::new(RefCell::new(Inner {
                session: ClientSession::new(config),
                get_token,
                emit,
                url: get("url").as_string().filter(|u| !u.is_empty()),
                ws: None,
                handlers: Vec::new(),
                generation: 0,
                token: None,
                plan: None,
                reconnect: Backoff::default(),
                refresh_backoff: Backoff::new(1_000, 30_000),
                state: "idle",
                timers: Timers::default(),
                fetching: false,
                stopped: false,
                swap: false,
                outbox: Vec::new(),
            })),
        })
    }

    /// Fetches a token and connects; reconnects by itself from then on.
    pub fn connect(&self) {
        self.inner.borrow_mut().stopped = false;
        start(&self.inner);
    }

    /// Subscribes now, or on (re)connection; the result arrives as a `subscribed` or
    /// `subscribe-error` event.
    pub fn subscribe(&self, filter: &str, qos_level: u8) -> Result<(), JsError> {
        let q = qos(qos_level)?;
        self.inner
            .borrow_mut()
            .session
            .subscribe(filter, q, now())
            .map_err(|e| JsError::new(&e.to_string()))?;
        drive(&self.inner);
        Ok(())
    }

    /// Unsubscribes.
    pub fn unsubscribe(&self, filter: &str) -> Result<(), JsError> {
        self.inner
            .borrow_mut()
            .session
            .unsubscribe(filter, now())
            .map_err(|e| JsError::new(&e.to_string()))?;
        drive(&self.inner);
        Ok(())
    }

    /// Publishes (queued while offline, bounded by `maxQueued`).
    pub fn publish(
        &self,
        topic: &str,
        payload: &[u8],
        qos_level: u8,
        retain: bool,
    ) -> Result<(), JsError> {
        let q = qos(qos_level)?;
        self.inner
            .borrow_mut()
            .session
            .publish(topic, payload, q, retain, now())
            .map_err(|e| JsError::new(&e.to_string()))?;
        drive(&self.inner);
        Ok(())
    }

    /// Fetches a new token now and applies it (AUTH, or a reconnect on MQTT 3.1.1); e.g. when
    /// the identity provider refreshed its session.
    #[wasm_bindgen(js_name = refreshToken)]
    pub fn refresh_token(&self) {
        let connected = self.inner.borrow().session.is_connected();
        if connected {
            fetch_token(&self.inner, Purpose::Refresh);
        } else {
            {
                // not connected yet: drop any attempt with the old token and start over
                let mut inner = self.inner.borrow_mut();
                inner.close_socket();
                inner.plan = None;
                clear(&mut inner.timers.reconnect);
            }
            start(&self.inner);
        }
    }

    /// Disconnects cleanly (ends the server session), forgets the token and stops
    /// reconnecting.
    pub fn disconnect(&self) {
        {
            let mut inner = self.inner.borrow_mut();
            inner.stopped = true;
            inner.session.disconnect(now());
            let bytes = inner.session.take_outgoing();
            if let Some(ws) = &inner.ws {
                let _ = ws.send_with_u8_array(&bytes);
            }
            inner.close_socket();
            clear(&mut inner.timers.refresh);
            clear(&mut inner.timers.reconnect);
            // the credentials belong to the session that ended (a sign-out, say): the next
            // connect() fetches new ones
            inner.token = None;
            inner.plan = None;
            inner.set_state("closed", Object::new());
        }
        flush_emits(&self.inner);
    }

    /// `idle`, `connecting`, `connected`, `reconnecting`, `fatal` or `closed`.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        self.inner.borrow().state.to_owned()
    }

    /// When the current token expires (ms since the epoch), or 0.
    #[wasm_bindgen(getter, js_name = expiresAt)]
    pub fn expires_at(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        self.inner
            .borrow()
            .plan
            .map_or(0.0, |p| p.expires_at as f64)
    }

    /// Publishes queued or in flight.
    #[wasm_bindgen(getter)]
    pub fn pending(&self) -> u32 {
        u32::try_from(self.inner.borrow().session.pending_publishes()).unwrap_or(u32::MAX)
    }
}
