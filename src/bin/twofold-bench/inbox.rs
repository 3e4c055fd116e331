//! The harness's end of the bench sender: codes arrive as datagrams `{to, code, purpose}` and go
//! to the virtual user waiting for that recipient. A code may arrive before its user starts
//! waiting (the courier can beat the RPC's answer), so it is kept until asked for.
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UnixDatagram;
use tokio::sync::oneshot;

#[derive(Debug, Deserialize)]
struct Datagram {
    to: String,
    code: String,
}

enum Slot {
    Waiting(oneshot::Sender<String>),
    Arrived(String),
}

#[derive(Clone)]
pub struct Inbox {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    path: PathBuf,
}

impl Inbox {
    /// Binds `path` (replacing a stale socket file) and starts receiving.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let socket = UnixDatagram::bind(path)?;
        let inbox = Self {
            slots: Arc::default(),
            path: path.to_owned(),
        };
        let receiver = inbox.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok(length) = socket.recv(&mut buffer).await {
                if let Ok(datagram) = serde_json::from_slice::<Datagram>(&buffer[..length]) {
                    receiver.deliver(datagram.to, datagram.code);
                }
            }
        });
        Ok(inbox)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn deliver(&self, recipient: String, code: String) {
        let mut slots = self.slots.lock().expect("inbox lock");
        match slots.remove(&recipient) {
            Some(Slot::Waiting(waiter)) => {
                if let Err(code) = waiter.send(code) {
                    // The waiter gave up; keep the code for its next try.
                    slots.insert(recipient, Slot::Arrived(code));
                }
            }
            _ => {
                slots.insert(recipient, Slot::Arrived(code));
            }
        }
    }

    /// Drops a code left over from an earlier, failed iteration.
    pub fn forget(&self, recipient: &str) {
        self.slots.lock().expect("inbox lock").remove(recipient);
    }

    /// The next code for `recipient`, and when it arrived.
    pub async fn wait(&self, recipient: &str, timeout: Duration) -> Option<(String, Instant)> {
        let receiver = {
            let mut slots = self.slots.lock().expect("inbox lock");
            match slots.remove(recipient) {
                Some(Slot::Arrived(code)) => return Some((code, Instant::now())),
                _ => {
                    let (sender, receiver) = oneshot::channel();
                    slots.insert(recipient.to_owned(), Slot::Waiting(sender));
                    receiver
                }
            }
        };
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(code)) => Some((code, Instant::now())),
            _ => {
                let mut slots = self.slots.lock().expect("inbox lock");
                if let Some(Slot::Waiting(_)) = slots.get(recipient) {
                    slots.remove(recipient);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn send(path: &Path, to: &str, code: &str) {
        let socket = UnixDatagram::unbound().unwrap();
        let body = serde_json::json!({"to": to, "code": code, "purpose": "login:x"});
        socket
            .send_to(&serde_json::to_vec(&body).unwrap(), path)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn codes_reach_their_recipient_whether_early_or_late() {
        let directory = tempfile::tempdir().unwrap();
        let inbox = Inbox::bind(&directory.path().join("codes.sock")).unwrap();
        let path = inbox.path().to_owned();

        // Early: the code is there before anyone waits.
        send(&path, "+4915100000001", "111111").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (code, _) = inbox
            .wait("+4915100000001", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(code, "111111");

        // Late: the waiter is woken when it arrives; another recipient's code is not taken.
        let waiting = {
            let inbox = inbox.clone();
            tokio::spawn(async move { inbox.wait("+4915100000002", Duration::from_secs(2)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        send(&path, "+4915100000003", "333333").await;
        send(&path, "+4915100000002", "222222").await;
        assert_eq!(waiting.await.unwrap().unwrap().0, "222222");
        assert!(
            inbox
                .wait("+4915100000009", Duration::from_millis(50))
                .await
                .is_none()
        );
        inbox.forget("+4915100000003");
        assert!(
            inbox
                .wait("+4915100000003", Duration::from_millis(50))
                .await
                .is_none()
        );
    }
}
