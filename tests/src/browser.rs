//! A real browser for tests of pages: Debian's headless `chromium`, driven over the Chrome
//! DevTools Protocol (a WebSocket carrying JSON commands). Enough of it to open a page, read
//! what it shows (`Runtime.evaluate`) and save a screenshot. Every wait has a deadline; the
//! browser and its profile directory are removed on drop.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{tungstenite::Message, MaybeTlsStream, WebSocketStream};

/// How long the browser may take to start and to answer one command.
const START: Duration = Duration::from_secs(30);
const COMMAND: Duration = Duration::from_secs(30);
/// Lines of the browser's stderr kept for error messages.
const STDERR_LINES: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("start chromium (tests/run installs Debian's `chromium`): {0}")]
    Start(std::io::Error),
    #[error("chromium did not print its DevTools address within {START:?}; its stderr ends:\n{0}")]
    NoDevTools(String),
    #[error("DevTools connection: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("DevTools command {method} got no answer within {COMMAND:?}")]
    Timeout { method: String },
    #[error("DevTools connection closed during {method}")]
    Closed { method: String },
    #[error("DevTools command {method} failed: {error}")]
    Command { method: String, error: Value },
    #[error("the page threw: {0}")]
    Script(Value),
    #[error("DevTools answer to {method} lacks {what}")]
    Answer { method: String, what: &'static str },
    #[error("screenshot: {0}")]
    Screenshot(String),
}

/// A headless Chromium with one page open.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Browser {
    /// Starts `chromium` with a fresh profile and opens one blank page of `width`×`height`
    /// CSS pixels.
    pub async fn launch(width: u32, height: u32) -> Result<Browser, BrowserError> {
        let profile = std::env::temp_dir().join(format!("chromium-{}", uuid::Uuid::new_v4()));
        let mut command = Command::new("chromium");
        command
            .arg("--headless")
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.display()))
            // Tests run as root, where Chromium's sandbox refuses to start.
            .arg("--no-sandbox")
            .arg("--disable-gpu")
            .arg("--disable-dev-shm-usage")
            .arg("--no-first-run")
            .arg("--hide-scrollbars")
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so drop can end the renderer and helper processes too.
            .process_group(0);
        let mut child = command.spawn().map_err(BrowserError::Start)?;
        let stderr = child.stderr.take().expect("stderr is piped");
        // Read on a thread of its own for the browser's whole life: a full pipe would stall it.
        let (address_tx, address_rx) = tokio::sync::oneshot::channel();
        let tail = Arc::new(Mutex::new(Vec::<String>::new()));
        let kept = tail.clone();
        std::thread::spawn(move || {
            let mut address_tx = Some(address_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = line.strip_prefix("DevTools listening on ") {
                    if let Some(tx) = address_tx.take() {
                        let _ = tx.send(address.trim().to_owned());
                    }
                }
                let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                if kept.len() == STDERR_LINES {
                    kept.remove(0);
                }
                kept.push(line);
            }
        });
        let mut browser_guard = Guard {
            child: Some(child),
            profile: profile.clone(),
        };
        let address = match tokio::time::timeout(START, address_rx).await {
            Ok(Ok(address)) => address,
            _ => {
                let lines = tail.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
                return Err(BrowserError::NoDevTools(lines));
            }
        };
        let mut browser_socket = connect(&address).await?;
        let mut id = 0;
        let target = command_on(
            &mut browser_socket,
            &mut id,
            "Target.createTarget",
            json!({"url": "about:blank"}),
        )
        .await?;
        let target_id = target["targetId"]
            .as_str()
            .ok_or_else(|| BrowserError::Answer {
                method: "Target.createTarget".into(),
                what: "targetId",
            })?
            .to_owned();
        let _ = browser_socket.close(None).await;
        // ws://127.0.0.1:PORT/devtools/browser/ID → ws://127.0.0.1:PORT/devtools/page/TARGET
        let base = address
            .split("/devtools/")
            .next()
            .unwrap_or(address.as_str());
        let socket = connect(&format!("{base}/devtools/page/{target_id}")).await?;
        let mut browser = Browser {
            child: browser_guard.child.take().expect("child kept"),
            profile,
            socket,
            next_id: id,
        };
        browser
            .command(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await?;
        Ok(browser)
    }

    /// Opens `url` in the page and waits until its document has loaded.
    pub async fn navigate(&mut self, url: &str) -> Result<(), BrowserError> {
        let answer = self.command("Page.navigate", json!({"url": url})).await?;
        if let Some(error) = answer.get("errorText") {
            return Err(BrowserError::Command {
                method: "Page.navigate".into(),
                error: error.clone(),
            });
        }
        // The page's own state is what tests poll; here only the document must be there.
        let deadline = tokio::time::Instant::now() + COMMAND;
        loop {
            let state = self.evaluate("document.readyState").await?;
            if state == "complete" || state == "interactive" {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BrowserError::Timeout {
                    method: format!("loading {url}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Evaluates a JavaScript expression in the page (promises are awaited) and returns its
    /// value as JSON.
    pub async fn evaluate(&mut self, expression: &str) -> Result<Value, BrowserError> {
        let answer = self
            .command(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(exception) = answer.get("exceptionDetails") {
            return Err(BrowserError::Script(exception.clone()));
        }
        Ok(answer["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Saves what the page shows in its viewport as a PNG file.
    pub async fn screenshot(&mut self, path: &Path) -> Result<(), BrowserError> {
        let answer = self
            .command("Page.captureScreenshot", json!({"format": "png"}))
            .await?;
        let data = answer["data"]
            .as_str()
            .ok_or_else(|| BrowserError::Answer {
                method: "Page.captureScreenshot".into(),
                what: "data",
            })?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| BrowserError::Screenshot(e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| BrowserError::Screenshot(e.to_string()))?;
        }
        std::fs::write(path, png).map_err(|e| BrowserError::Screenshot(e.to_string()))
    }

    /// Sends one command to the page and returns its `result`.
    pub async fn command(&mut self, method: &str, params: Value) -> Result<Value, BrowserError> {
        command_on(&mut self.socket, &mut self.next_id, method, params).await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Ends the browser if `launch` fails half-way.
struct Guard {
    child: Option<Child>,
    profile: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_group(child);
            let _ = std::fs::remove_dir_all(&self.profile);
        }
    }
}

/// SIGKILL to the browser's process group (it leads it), then reaps it.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .arg(format!("-{}", child.id()))
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

async fn connect(
    address: &str,
) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, BrowserError> {
    match tokio::time::timeout(COMMAND, tokio_tungstenite::connect_async(address)).await {
        Ok(connected) => Ok(connected?.0),
        Err(_) => Err(BrowserError::Timeout {
            method: format!("connecting to {address}"),
        }),
    }
}

/// Sends a command and reads until its answer; events the browser sends meanwhile are not
/// needed by tests and are dropped.
async fn command_on(
    socket: &mut WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: &mut u64,
    method: &str,
    params: Value,
) -> Result<Value, BrowserError> {
    *next_id += 1;
    let id = *next_id;
    let request = json!({"id": id, "method": method, "params": params}).to_string();
    let exchange = async {
        socket.send(Message::text(request)).await?;
        while let Some(message) = socket.next().await {
            let message = message?;
            let Ok(text) = message.to_text() else {
                continue;
            };
            let Ok(answer) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if answer["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(error) = answer.get("error") {
                return Err(BrowserError::Command {
                    method: method.into(),
                    error: error.clone(),
                });
            }
            return Ok(answer.get("result").cloned().unwrap_or(Value::Null));
        }
        Err(BrowserError::Closed {
            method: method.into(),
        })
    };
    tokio::time::timeout(COMMAND, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(BrowserError::Timeout {
                method: method.into(),
            })
        })
}
