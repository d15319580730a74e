//! A minimal Redis client (RESP2 over TCP) for the shared limit backend: pipelined commands,
//! integer, status, error and bulk replies, every read bounded. Off the request path.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Largest bulk reply accepted (the limit backend reads only integers and short strings).
const MAX_BULK: usize = 64 * 1024;

/// One reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and friends.
    Status(String),
    /// `:n`.
    Int(i64),
    /// `$n` … (`None` for a null bulk string).
    Bulk(Option<Vec<u8>>),
    /// `-ERR …`: the command failed.
    Error(String),
}

/// Why talking to Redis failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// Connecting, reading or writing failed: Redis is down or unreachable.
    #[error("redis I/O: {0}")]
    Io(#[from] std::io::Error),
    /// No answer within the timeout: Redis is slow or partitioned.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The server sent something that is not RESP.
    #[error("redis protocol: {0}")]
    Protocol(&'static str),
}

/// One connection to a Redis server.
#[derive(Debug)]
pub struct Redis {
    stream: BufReader<TcpStream>,
    timeout: Duration,
}

impl Redis {
    /// Connects to `addr` (`host:port`) within `timeout`; every later exchange has the same
    /// bound.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Redis, RedisError> {
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| RedisError::Timeout(timeout))??;
        tcp.set_nodelay(true)?;
        Ok(Redis {
            stream: BufReader::new(tcp),
            timeout,
        })
    }

    /// Sends `commands` in one write and reads one reply per command.
    pub async fn pipeline(&mut self, commands: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, RedisError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.exchange(commands))
            .await
            .map_err(|_| RedisError::Timeout(timeout))?
    }

    async fn exchange(&mut self, commands: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, RedisError> {
        let mut out = Vec::new();
        for cmd in commands {
            out.extend_from_slice(format!("*{}\r\n", cmd.len()).as_bytes());
            for arg in cmd {
                out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                out.extend_from_slice(arg);
                out.extend_from_slice(b"\r\n");
            }
        }
        self.stream.get_mut().write_all(&out).await?;
        let mut replies = Vec::with_capacity(commands.len());
        for _ in commands {
            replies.push(self.reply().await?);
        }
        Ok(replies)
    }

    async fn line(&mut self) -> Result<String, RedisError> {
        let mut line = Vec::new();
        let n = (&mut self.stream)
            .take(MAX_BULK as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Err(RedisError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        if !line.ends_with(b"\r\n") {
            return Err(RedisError::Protocol("line not ended by CRLF"));
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|_| RedisError::Protocol("reply is not UTF-8"))
    }

    async fn reply(&mut self) -> Result<Reply, RedisError> {
        let line = self.line().await?;
        let (kind, rest) = line.split_at(line.len().min(1));
        match kind {
            "+" => Ok(Reply::Status(rest.to_owned())),
            "-" => Ok(Reply::Error(rest.to_owned())),
            ":" => rest
                .parse()
                .map(Reply::Int)
                .map_err(|_| RedisError::Protocol("bad integer reply")),
            "$" => {
                let len: i64 = rest
                    .parse()
                    .map_err(|_| RedisError::Protocol("bad bulk length"))?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let len = usize::try_from(len).map_err(|_| RedisError::Protocol("bad length"))?;
                if len > MAX_BULK {
                    return Err(RedisError::Protocol("bulk reply too large"));
                }
                let mut buf = vec![0u8; len + 2];
                self.stream.read_exact(&mut buf).await?;
                buf.truncate(len);
                Ok(Reply::Bulk(Some(buf)))
            }
            _ => Err(RedisError::Protocol("unsupported reply type")),
        }
    }
}

/// A command from its arguments.
pub fn cmd<const N: usize>(args: [&[u8]; N]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.to_vec()).collect()
}
