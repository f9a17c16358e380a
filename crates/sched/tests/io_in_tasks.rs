//! Tokio-based I/O inside tiffany tasks (threaded runtime, I/O driver on):
//! TCP server and client, child processes, an HTTP request with `reqwest`,
//! and `tokio::time::sleep`. The tokio reactor runs on its own thread and
//! wakes tasks through their worker's inbox.

mod common;

use std::time::Duration;

use tiffany_sched::{GroupConfig, Runtime, spawn};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

fn io_runtime() -> Runtime {
    Runtime::builder().workers(2).io(true).build().unwrap()
}

/// An echo server on one worker and three clients on the other, all tasks.
#[test]
fn io_tcp_echo_server_and_clients_run_as_tasks() {
    let rt = io_runtime();
    let server_agent = rt.group(GroupConfig::new("server").worker(0));
    let client_agent = rt.group(GroupConfig::new("client").worker(1));
    let replies = rt.block_on(async move {
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let server = server_agent.spawn(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let mut connections = Vec::new();
            for _ in 0..3 {
                let (mut socket, _) = listener.accept().await.unwrap();
                // One local task per connection.
                connections.push(spawn(async move {
                    let (mut reader, mut writer) = socket.split();
                    tokio::io::copy(&mut reader, &mut writer).await.unwrap()
                }));
            }
            let mut echoed = 0;
            for c in connections {
                echoed += c.await.unwrap();
            }
            echoed
        });
        let addr = addr_rx.await.unwrap();
        let clients: Vec<_> = (0..3)
            .map(|i| {
                client_agent.spawn(async move {
                    let mut stream = TcpStream::connect(addr).await.unwrap();
                    let message = format!("hello tiffany #{i}");
                    stream.write_all(message.as_bytes()).await.unwrap();
                    stream.shutdown().await.unwrap();
                    let mut reply = String::new();
                    stream.read_to_string(&mut reply).await.unwrap();
                    (message, reply)
                })
            })
            .collect();
        let mut replies = Vec::new();
        for c in clients {
            replies.push(c.await.unwrap());
        }
        let echoed = server.await.unwrap();
        (replies, echoed)
    });
    let (replies, echoed) = replies;
    for (message, reply) in &replies {
        assert_eq!(reply, message);
    }
    let sent: usize = replies.iter().map(|(m, _)| m.len()).sum();
    assert_eq!(echoed, sent as u64);
}

#[test]
fn io_child_process_output_is_awaited_in_a_task() {
    let rt = io_runtime();
    let output = rt.block_on(async {
        tokio::process::Command::new("sh")
            .args(["-c", "echo hello; echo oops >&2; exit 3"])
            .output()
            .await
            .unwrap()
    });
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello\n");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "oops\n");
    assert_eq!(output.status.code(), Some(3));

    // Piped stdin and a concurrent sibling task on the same worker.
    let (upper, sibling) = rt.block_on(async {
        let sibling = spawn(async {
            let mut n = 0u32;
            for _ in 0..100 {
                n += 1;
                tiffany_sched::yield_now().await;
            }
            n
        });
        let mut child = tokio::process::Command::new("tr")
            .arg("a-z")
            .arg("A-Z")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"shout\n").await.unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        (
            String::from_utf8(out.stdout).unwrap(),
            sibling.await.unwrap(),
        )
    });
    assert_eq!(upper, "SHOUT\n");
    assert_eq!(sibling, 100);
}

/// A minimal HTTP/1.1 server: answers one request with its request line
/// and the value of its `x-test` header.
async fn serve_one_http_request(listener: TcpListener) -> String {
    let (socket, _) = listener.accept().await.unwrap();
    let mut reader = BufReader::new(socket);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await.unwrap();
    let mut x_test = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("x-test") {
                x_test = value.trim().to_owned();
            }
        }
    }
    let body = format!("{} x-test={x_test}", request_line.trim_end());
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut socket = reader.into_inner();
    socket.write_all(response.as_bytes()).await.unwrap();
    socket.shutdown().await.unwrap();
    request_line
}

/// A real HTTP request with `reqwest` from a task, to a hand-written server
/// running as a task on the other worker.
#[test]
fn io_http_request_with_reqwest_from_a_task() {
    let rt = io_runtime();
    let server_agent = rt.group(GroupConfig::new("http-server").worker(0));
    let client_agent = rt.group(GroupConfig::new("http-client").worker(1));
    let (status, body, request_line) = rt.block_on(async move {
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let server = server_agent.spawn(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            serve_one_http_request(listener).await
        });
        let addr = addr_rx.await.unwrap();
        let client = client_agent.spawn(async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let response = client
                .get(format!("http://{addr}/hello?who=tiffany"))
                .header("x-test", "yes")
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        });
        let (status, body) = client.await.unwrap();
        (status, body, server.await.unwrap())
    });
    assert_eq!(status, 200);
    assert_eq!(body, "GET /hello?who=tiffany HTTP/1.1 x-test=yes");
    assert_eq!(request_line, "GET /hello?who=tiffany HTTP/1.1\r\n");
}

#[test]
fn io_tokio_sleep_inside_a_task() {
    let rt = io_runtime();
    let agent = rt.group(GroupConfig::new("sleeper"));
    let slept = rt.block_on(agent.spawn(async {
        let start = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(30)).await;
        start.elapsed()
    }));
    assert!(slept.unwrap() >= Duration::from_millis(30));
    // The wake came from the tokio driver's thread: an I/O-style wake.
    let counters = agent.feedback().counters;
    assert_eq!(counters.io_wait.count(), 1);
    assert_eq!(counters.completed, 1);
}

/// With the I/O driver off, tokio I/O fails inside the task that tried it,
/// and only there.
#[test]
fn io_without_the_driver_fails_only_the_task_that_uses_it() {
    let rt = Runtime::builder().workers(1).io(false).build().unwrap();
    let agent = rt.group(GroupConfig::new("no-io"));
    common::expect_panics_containing("no reactor running");
    let err = rt
        .block_on(agent.spawn(async { TcpListener::bind("127.0.0.1:0").await.is_ok() }))
        .unwrap_err();
    assert!(err.is_panic(), "{err:?}");
    assert_eq!(rt.block_on(agent.spawn(async { 7 })).unwrap(), 7);
}
