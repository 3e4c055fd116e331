//! A runtime on a thread of its own, for the virtual users of the modes where the server does
//! most of the work. The harness shares two cores with the server and the stores it measures;
//! its users on one thread wake one another without waking a second thread, and at 1,000
//! step-ups/s cost a fifth less CPU than on a worker per core (0.22–0.23 cores against
//! 0.28–0.29, docs/performance.md, "After the thirteenth pass"). `WhoAmI` alone is the other way
//! round: the server answers from its cache, the harness does as much as it, and on one thread it
//! capped the calls per second.
use std::thread::JoinHandle;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub struct OneThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl OneThread {
    pub fn start() -> Result<Self, String> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (handed, handle) = std::sync::mpsc::channel();
        // Built on its own thread, so that it is dropped there too: a runtime must not be
        // dropped inside another's async context.
        let thread = std::thread::Builder::new()
            .name("bench-users".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = handed.send(Err(error.to_string()));
                        return;
                    }
                };
                let _ = handed.send(Ok(runtime.handle().clone()));
                // Its tasks run only while this thread drives the runtime.
                let _ = runtime.block_on(stopped);
            })
            .map_err(|error| format!("starting the users' thread: {error}"))?;
        let handle = handle
            .recv()
            .map_err(|_| "the users' thread ended before its runtime started".to_owned())?
            .map_err(|error| format!("starting the users' runtime: {error}"))?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for OneThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Blocks the caller only while the stopped runtime drops its tasks: nothing there waits
        // on the caller's runtime.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
