//! `test-http-server`: a tiny HTTP/1.1 server used as a workload in berth's
//! container integration tests.
//!
//! It is meant to run as PID 1 inside a container, so it installs handlers for
//! SIGTERM and SIGINT that exit immediately with status 0 (the kernel ignores
//! signals without a handler for PID 1).
//!
//! Routes (`GET`, and `HEAD` which omits the body):
//!
//! * `/`            -> `200 <GREETING> from <hostname>\n` (`GREETING` defaults to `hello`)
//! * `/health`      -> `200 ok`
//! * `/env/<NAME>`  -> `200 <value of NAME>` or `404`
//! * `/exit/<code>` -> `200`, then the process exits with `<code>` (0..=255)
//! * `/aws/ecs/ListClusters` -> berth's answer to an ECS `ListClusters` signed with the
//!   task role's credentials (see `aws`), or `502` with why it could not be sent
//! * anything else  -> `404`
//!
//! Malformed requests get a `400`. Every response carries `Content-Length` and
//! `Connection: close`; one log line per request is printed to stdout.

mod aws;

use std::env;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const DEFAULT_PORT: u16 = 8080;
/// Maximum length of the request line and of each header line.
const MAX_LINE: usize = 8 * 1024;
const MAX_HEADERS: usize = 100;
/// Request bodies up to this size are read and discarded.
const MAX_BODY_DRAIN: u64 = 1024 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the client to close after the response was sent.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

const USAGE: &str = "usage: test-http-server [--port N]\n\
                     Listens on 0.0.0.0:$PORT (default 8080); --port overrides PORT.\n";

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Serve { port: u16 },
    Help,
}

/// Parses the command line (without the program name) and the value of the
/// `PORT` environment variable.
fn parse_args(args: &[String], env_port: Option<&str>) -> Result<Command, String> {
    let mut port = match env_port.map(str::trim) {
        None | Some("") => DEFAULT_PORT,
        Some(p) => parse_port(p).map_err(|e| format!("invalid PORT environment variable: {e}"))?,
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-p" | "--port" => {
                let value = iter
                    .next()
                    .ok_or_else(|| format!("{arg} requires a value"))?;
                port = parse_port(value)?;
            }
            other => match other.strip_prefix("--port=") {
                Some(value) => port = parse_port(value)?,
                None => return Err(format!("unexpected argument: {other}")),
            },
        }
    }
    Ok(Command::Serve { port })
}

fn parse_port(value: &str) -> Result<u16, String> {
    value
        .parse::<u16>()
        .map_err(|_| format!("invalid port: {value:?}"))
}

// ---------------------------------------------------------------------------
// Request parsing and routing (pure)
// ---------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
struct RequestLine {
    method: String,
    target: String,
    version: String,
}

#[derive(Debug, PartialEq, Eq)]
enum ParseError {
    /// Not an HTTP request line (400).
    Malformed,
    /// Well formed, but not HTTP/1.x (505).
    UnsupportedVersion,
}

/// `tchar` from RFC 9110, the characters allowed in a method token.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses an HTTP/1.x request line such as `GET /health HTTP/1.1` (a trailing
/// CRLF or LF is ignored).
fn parse_request_line(line: &str) -> Result<RequestLine, ParseError> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Malformed);
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(ParseError::Malformed);
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control() || b >= 0x7f) {
        return Err(ParseError::Malformed);
    }
    let Some(ver) = version.strip_prefix("HTTP/") else {
        return Err(ParseError::Malformed);
    };
    match ver.as_bytes() {
        [b'1', b'.', minor] if minor.is_ascii_digit() => {}
        [major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
            return Err(ParseError::UnsupportedVersion)
        }
        [major] if major.is_ascii_digit() => return Err(ParseError::UnsupportedVersion),
        _ => return Err(ParseError::Malformed),
    }
    Ok(RequestLine {
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
    })
}

#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    body: String,
    /// Exit the process with this code once the response has been sent.
    exit_code: Option<i32>,
}

impl Response {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            body: body.into(),
            exit_code: None,
        }
    }

    fn not_found() -> Self {
        Response::new(404, "not found\n")
    }

    fn bad_request() -> Self {
        Response::new(400, "bad request\n")
    }

    fn for_parse_error(err: &ParseError) -> Self {
        match err {
            ParseError::Malformed => Response::bad_request(),
            ParseError::UnsupportedVersion => Response::new(505, "http version not supported\n"),
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        403 => "Forbidden",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Maps a request to a response. `env_lookup` returns the value of an
/// environment variable (injected to keep this function pure, but for `/aws/...`).
fn route(
    method: &str,
    target: &str,
    hostname: &str,
    env_lookup: impl Fn(&str) -> Option<String>,
) -> Response {
    if method != "GET" && method != "HEAD" {
        return Response::not_found();
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    match path {
        "/" => {
            let greeting = env_lookup("GREETING").unwrap_or_else(|| "hello".into());
            Response::new(200, format!("{greeting} from {hostname}\n"))
        }
        "/health" => Response::new(200, "ok"),
        // The one route with I/O: it acts as a task's AWS SDK would.
        "/aws/ecs/ListClusters" => match aws::ecs_list_clusters(&env_lookup) {
            Ok((status, body)) => Response::new(status, body),
            Err(e) => Response::new(502, format!("{e}\n")),
        },
        _ => {
            if let Some(name) = path.strip_prefix("/env/") {
                if !is_valid_env_name(name) {
                    return Response::not_found();
                }
                match env_lookup(name) {
                    Some(value) => Response::new(200, value),
                    None => Response::not_found(),
                }
            } else if let Some(code) = path.strip_prefix("/exit/") {
                match code.parse::<u8>() {
                    Ok(code) => Response {
                        status: 200,
                        body: format!("exiting with code {code}\n"),
                        exit_code: Some(i32::from(code)),
                    },
                    Err(_) => Response::new(400, "exit code must be an integer in 0..=255\n"),
                }
            } else {
                Response::not_found()
            }
        }
    }
}

/// Names that can be passed to `std::env::var_os` without surprises.
fn is_valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0', '/'])
}

/// Serializes a response. For `HEAD` requests the body is omitted but
/// `Content-Length` still describes it.
fn render_response(resp: &Response, include_body: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        resp.status,
        reason_phrase(resp.status),
        resp.body.len()
    )
    .into_bytes();
    if include_body {
        out.extend_from_slice(resp.body.as_bytes());
    }
    out
}

/// Makes client-supplied text safe to print on one log line.
fn sanitize_for_log(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().nth(200).is_some() {
        out.push_str("...");
    }
    out
}

// ---------------------------------------------------------------------------
// Networking
// ---------------------------------------------------------------------------

type ExitFn = dyn Fn(i32) + Send + Sync;

struct Context {
    hostname: String,
    /// Called after an `/exit/<code>` response has been delivered.
    exit: Box<ExitFn>,
}

enum ReadError {
    /// The client sent nothing before closing the connection.
    Closed,
    /// The request was not understood; respond with this status.
    Bad(Response),
}

struct Request {
    line: RequestLine,
    content_length: Option<u64>,
}

/// Reads one line (terminated by LF) into `buf`, reading at most
/// `MAX_LINE + 1` bytes. Returns `Ok(None)` at EOF, `Ok(Some(true))` for a
/// complete line and `Ok(Some(false))` for a line that is too long or was cut
/// short by EOF.
fn read_line_limited<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<Option<bool>> {
    buf.clear();
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(buf.ends_with(b"\n") && buf.len() <= MAX_LINE))
}

fn read_request<R: BufRead>(reader: &mut R, raw_line: &mut String) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(256);
    let io_err = |e: io::Error| {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ReadError::Bad(Response::new(408, "request timeout\n"))
        } else {
            ReadError::Closed
        }
    };

    // Request line; RFC 9112 says to ignore a few leading empty lines.
    let mut complete;
    let mut attempts = 0;
    loop {
        complete = match read_line_limited(reader, &mut buf).map_err(io_err)? {
            None => return Err(ReadError::Closed),
            Some(c) => c,
        };
        attempts += 1;
        if !(complete && (buf == b"\r\n" || buf == b"\n") && attempts < 4) {
            break;
        }
    }
    *raw_line = String::from_utf8_lossy(&buf).trim_end().to_string();
    if !complete {
        return Err(ReadError::Bad(if buf.len() > MAX_LINE {
            Response::new(414, "request line too long\n")
        } else {
            Response::bad_request()
        }));
    }
    let line = std::str::from_utf8(&buf)
        .map_err(|_| ReadError::Bad(Response::bad_request()))
        .and_then(|s| {
            parse_request_line(s).map_err(|e| ReadError::Bad(Response::for_parse_error(&e)))
        })?;

    // Headers. EOF before the empty line is tolerated (e.g. `printf ... | nc`).
    let mut content_length = None;
    for _ in 0..=MAX_HEADERS {
        let complete = match read_line_limited(reader, &mut buf).map_err(io_err)? {
            None => {
                return Ok(Request {
                    line,
                    content_length,
                })
            }
            Some(c) => c,
        };
        if buf == b"\r\n" || buf == b"\n" {
            return Ok(Request {
                line,
                content_length,
            });
        }
        if !complete {
            if buf.len() > MAX_LINE {
                return Err(ReadError::Bad(Response::new(431, "header too long\n")));
            }
            // Last header line cut short by EOF: accept what we have.
            return Ok(Request {
                line,
                content_length,
            });
        }
        let text = String::from_utf8_lossy(&buf);
        let Some((name, value)) = text.split_once(':') else {
            return Err(ReadError::Bad(Response::bad_request()));
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(ReadError::Bad(Response::bad_request()));
        }
        if name.eq_ignore_ascii_case("content-length") {
            match value.trim().parse::<u64>() {
                Ok(n) => content_length = Some(n),
                Err(_) => return Err(ReadError::Bad(Response::bad_request())),
            }
        }
    }
    Err(ReadError::Bad(Response::new(431, "too many headers\n")))
}

fn log_line(msg: &str) {
    if cfg!(test) {
        // Lets the test harness capture the output.
        println!("{msg}");
        return;
    }
    // Ignore errors (e.g. a closed stdout) instead of panicking like println!.
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{msg}");
    let _ = out.flush();
}

fn handle_connection(stream: TcpStream, ctx: &Context) {
    let start = Instant::now();
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "-".to_string());
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));

    let mut reader = BufReader::new(&stream);
    let mut raw_line = String::new();
    let (resp, include_body) = match read_request(&mut reader, &mut raw_line) {
        Ok(req) => {
            if let Some(n) = req.content_length.filter(|n| *n <= MAX_BODY_DRAIN) {
                let _ = io::copy(&mut reader.by_ref().take(n), &mut io::sink());
            }
            let resp = route(&req.line.method, &req.line.target, &ctx.hostname, |name| {
                env::var_os(name).map(|v| v.to_string_lossy().into_owned())
            });
            (resp, req.line.method != "HEAD")
        }
        Err(ReadError::Closed) => return,
        Err(ReadError::Bad(resp)) => (resp, true),
    };

    let write_result = (&stream)
        .write_all(&render_response(&resp, include_body))
        .and_then(|()| (&stream).flush());
    log_line(&format!(
        "{peer} \"{}\" {} {} {}ms{}",
        sanitize_for_log(&raw_line),
        resp.status,
        resp.body.len(),
        start.elapsed().as_millis(),
        match &write_result {
            Ok(()) => String::new(),
            Err(e) => format!(" (write failed: {e})"),
        }
    ));

    // Lingering close: send FIN, then wait briefly for the client to close so
    // that unread request bytes do not turn our close into a RST that could
    // destroy the response before the client has read it.
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER_TIMEOUT));
    let _ = io::copy(&mut reader.take(MAX_BODY_DRAIN), &mut io::sink());

    if let Some(code) = resp.exit_code {
        log_line(&format!(
            "exit requested by {peer}, exiting with code {code}"
        ));
        (ctx.exit)(code);
    }
}

/// Accepts connections forever, one thread per connection.
fn serve(listener: TcpListener, ctx: Arc<Context>) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let ctx = Arc::clone(&ctx);
                let spawned = thread::Builder::new()
                    .name("conn".to_string())
                    .stack_size(256 * 1024)
                    .spawn(move || handle_connection(stream, &ctx));
                if let Err(e) = spawned {
                    log_line(&format!("failed to spawn connection thread: {e}"));
                }
            }
            Err(e) => {
                log_line(&format!("accept failed: {e}"));
                // Avoid spinning on persistent errors such as EMFILE.
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Process setup
// ---------------------------------------------------------------------------

extern "C" fn on_signal(sig: libc::c_int) {
    let msg: &[u8] = match sig {
        libc::SIGTERM => b"received SIGTERM, exiting\n",
        libc::SIGINT => b"received SIGINT, exiting\n",
        _ => b"received signal, exiting\n",
    };
    // Only async-signal-safe calls here: write(2) and _exit(2).
    unsafe {
        libc::write(libc::STDOUT_FILENO, msg.as_ptr().cast(), msg.len());
        libc::_exit(0);
    }
}

fn install_signal_handlers() -> io::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `on_signal` only performs async-signal-safe operations.
        let previous = unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t,
            )
        };
        if previous == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            env::var("HOSTNAME")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let env_port = env::var("PORT").ok();
    let port = match parse_args(&args, env_port.as_deref()) {
        Ok(Command::Serve { port }) => port,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return;
        }
        Err(e) => {
            eprint!("test-http-server: {e}\n{USAGE}");
            process::exit(2);
        }
    };

    if let Err(e) = install_signal_handlers() {
        eprintln!("test-http-server: failed to install signal handlers: {e}");
        process::exit(1);
    }

    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("test-http-server: cannot listen on {addr}: {e}");
            process::exit(1);
        }
    };
    let ctx = Arc::new(Context {
        hostname: hostname(),
        exit: Box::new(|code| {
            let _ = io::stdout().flush();
            process::exit(code)
        }),
    });
    let local = listener.local_addr().unwrap_or(addr);
    log_line(&format!(
        "test-http-server listening on {local} (hostname {})",
        ctx.hostname
    ));
    serve(listener, ctx);
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn parse_args_port_sources() {
        assert_eq!(
            parse_args(&[], None),
            Ok(Command::Serve { port: DEFAULT_PORT })
        );
        assert_eq!(
            parse_args(&[], Some("")),
            Ok(Command::Serve { port: DEFAULT_PORT })
        );
        assert_eq!(
            parse_args(&[], Some("9000")),
            Ok(Command::Serve { port: 9000 })
        );
        assert_eq!(
            parse_args(&args(&["--port", "81"]), Some("9000")),
            Ok(Command::Serve { port: 81 })
        );
        assert_eq!(
            parse_args(&args(&["--port=82"]), None),
            Ok(Command::Serve { port: 82 })
        );
        assert_eq!(
            parse_args(&args(&["-p", "83"]), None),
            Ok(Command::Serve { port: 83 })
        );
        assert_eq!(parse_args(&args(&["--help"]), None), Ok(Command::Help));
        assert!(parse_args(&args(&["--port"]), None).is_err());
        assert!(parse_args(&args(&["--port", "70000"]), None).is_err());
        assert!(parse_args(&args(&["--bogus"]), None).is_err());
        assert!(parse_args(&[], Some("http")).is_err());
    }

    #[test]
    fn parses_valid_request_lines() {
        assert_eq!(
            parse_request_line("GET /health HTTP/1.1\r\n"),
            Ok(RequestLine {
                method: "GET".into(),
                target: "/health".into(),
                version: "HTTP/1.1".into(),
            })
        );
        let line = parse_request_line("POST /env/FOO?x=1 HTTP/1.0").unwrap();
        assert_eq!(line.method, "POST");
        assert_eq!(line.target, "/env/FOO?x=1");
        assert_eq!(line.version, "HTTP/1.0");
    }

    #[test]
    fn rejects_bad_request_lines() {
        for bad in [
            "",
            "\r\n",
            "GET",
            "GET /",
            "GET / HTTP/1.1 extra",
            "GET  / HTTP/1.1",
            "GET health HTTP/1.1",
            "GET / FTP/1.1",
            "GET / HTTP/1.x",
            "G(T / HTTP/1.1",
            "GET /\x01 HTTP/1.1",
            "\u{1F600} / HTTP/1.1",
        ] {
            assert_eq!(
                parse_request_line(bad),
                Err(ParseError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_request_line("GET / HTTP/2.0"),
            Err(ParseError::UnsupportedVersion)
        );
        assert_eq!(
            parse_request_line("GET / HTTP/2"),
            Err(ParseError::UnsupportedVersion)
        );
    }

    #[test]
    fn routes_basic_paths() {
        assert_eq!(
            route("GET", "/", "box1", no_env),
            Response::new(200, "hello from box1\n")
        );
        assert_eq!(
            route("GET", "/health", "h", no_env),
            Response::new(200, "ok")
        );
        assert_eq!(
            route("GET", "/health?probe=1", "h", no_env),
            Response::new(200, "ok")
        );
        assert_eq!(route("HEAD", "/health", "h", no_env).status, 200);
        let greeting = |name: &str| (name == "GREETING").then(|| "hi there".to_string());
        assert_eq!(
            route("GET", "/", "box1", greeting),
            Response::new(200, "hi there from box1\n")
        );
        assert_eq!(route("GET", "/nope", "h", no_env).status, 404);
        assert_eq!(route("GET", "/health/", "h", no_env).status, 404);
        assert_eq!(route("POST", "/health", "h", no_env).status, 404);
        assert_eq!(route("DELETE", "/", "h", no_env).status, 404);
    }

    #[test]
    fn routes_env_lookups() {
        let lookup = |name: &str| (name == "FOO").then(|| "bar".to_string());
        assert_eq!(
            route("GET", "/env/FOO", "h", lookup),
            Response::new(200, "bar")
        );
        assert_eq!(route("GET", "/env/MISSING", "h", lookup).status, 404);
        assert_eq!(route("GET", "/env/", "h", lookup).status, 404);
        // Names that would make the std env functions misbehave.
        let panicky = |_: &str| -> Option<String> { panic!("must not be called") };
        assert_eq!(route("GET", "/env/A=B", "h", panicky).status, 404);
        assert_eq!(route("GET", "/env/A/B", "h", panicky).status, 404);
    }

    #[test]
    fn routes_exit_codes() {
        let resp = route("GET", "/exit/3", "h", no_env);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.exit_code, Some(3));
        assert_eq!(route("GET", "/exit/0", "h", no_env).exit_code, Some(0));
        assert_eq!(route("GET", "/exit/255", "h", no_env).exit_code, Some(255));
        for bad in ["/exit/", "/exit/x", "/exit/256", "/exit/-1"] {
            let resp = route("GET", bad, "h", no_env);
            assert_eq!(resp.status, 400, "{bad}");
            assert_eq!(resp.exit_code, None, "{bad}");
        }
        assert_eq!(route("POST", "/exit/1", "h", no_env).exit_code, None);
    }

    #[test]
    fn renders_responses() {
        let resp = Response::new(200, "ok");
        let text = String::from_utf8(render_response(&resp, true)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 2\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nok"), "{text}");
        let head = String::from_utf8(render_response(&resp, false)).unwrap();
        assert!(head.contains("Content-Length: 2\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
    }

    #[test]
    fn reads_requests_from_a_stream() {
        let mut raw = String::new();
        let mut input: &[u8] = b"\r\nGET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
        let req = read_request(&mut input, &mut raw).ok().unwrap();
        assert_eq!(req.line.target, "/a");
        assert_eq!(req.content_length, Some(3));
        assert_eq!(raw, "GET /a HTTP/1.1");

        // EOF before the blank line is tolerated.
        let mut input: &[u8] = b"GET /health HTTP/1.0\r\n";
        assert!(read_request(&mut input, &mut raw).is_ok());

        let mut input: &[u8] = b"";
        assert!(matches!(
            read_request(&mut input, &mut raw),
            Err(ReadError::Closed)
        ));

        for (bad, status) in [
            (&b"garbage\r\n\r\n"[..], 400),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            (b"GET /\xff HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/3.0\r\n\r\n", 505),
        ] {
            let mut input = bad;
            match read_request(&mut input, &mut raw) {
                Err(ReadError::Bad(resp)) => assert_eq!(resp.status, status, "{bad:?}"),
                _ => panic!("expected bad request for {bad:?}"),
            }
        }

        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_LINE));
        match read_request(&mut long.as_bytes(), &mut raw) {
            Err(ReadError::Bad(resp)) => assert_eq!(resp.status, 414),
            _ => panic!("expected 414"),
        }
    }

    #[test]
    fn sanitizes_log_text() {
        assert_eq!(sanitize_for_log("GET /\x1b[31m"), "GET /?[31m");
        assert!(sanitize_for_log(&"x".repeat(500)).ends_with("..."));
    }

    fn request(addr: SocketAddr, raw: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(raw).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    #[test]
    fn serves_real_requests_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (exit_tx, exit_rx) = mpsc::channel::<i32>();
        let exit_tx = std::sync::Mutex::new(exit_tx);
        let ctx = Arc::new(Context {
            hostname: "test-host".to_string(),
            exit: Box::new(move |code| {
                let _ = exit_tx.lock().unwrap().send(code);
            }),
        });
        thread::spawn(move || serve(listener, ctx));

        let resp = request(addr, b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.contains("Content-Length: 2\r\n"), "{resp}");
        assert!(resp.contains("Connection: close\r\n"), "{resp}");
        assert!(resp.ends_with("\r\n\r\nok"), "{resp}");

        let resp = request(addr, b"GET / HTTP/1.1\r\n\r\n");
        assert!(resp.ends_with("\r\n\r\nhello from test-host\n"), "{resp}");

        let resp = request(addr, b"this is not http\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{resp}");

        let resp = request(addr, b"GET /missing HTTP/1.1\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 404 Not Found\r\n"), "{resp}");

        // A connection closed without sending anything must not break the server.
        drop(TcpStream::connect(addr).unwrap());

        let resp = request(addr, b"GET /exit/7 HTTP/1.1\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert_eq!(exit_rx.recv_timeout(Duration::from_secs(10)), Ok(7));

        let resp = request(addr, b"GET /health HTTP/1.0\r\n\r\n");
        assert!(resp.ends_with("\r\n\r\nok"), "{resp}");
    }
}
