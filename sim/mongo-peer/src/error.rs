//! Server errors as mongod reports them: a numeric `code`, its `codeName`, and the error labels
//! the driver keys its retry decisions on.

use bson::{doc, Bson, Document};

/// One command failure, turned into `{ok: 0, errmsg, code, codeName, errorLabels}` on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct CmdError {
    pub code: i32,
    pub code_name: &'static str,
    detail: Box<Detail>,
}

/// Boxed so that `Result<_, CmdError>` stays small on the happy path.
#[derive(Debug, Clone, PartialEq)]
struct Detail {
    msg: String,
    labels: Vec<&'static str>,
    /// Fields merged into the error reply (mongod adds `topologyVersion` to state-change errors so
    /// that the driver can tell a stale error from a fresh one).
    extra: Document,
}

macro_rules! codes {
    ($($name:ident = $code:expr),* $(,)?) => {
        $(
            #[allow(non_snake_case, dead_code)]
            pub fn $name(msg: impl Into<String>) -> CmdError {
                CmdError::new($code, stringify!($name), msg)
            }
        )*
    };
}

impl CmdError {
    pub fn new(code: i32, code_name: &'static str, msg: impl Into<String>) -> Self {
        CmdError { code, code_name, detail: Box::new(Detail { msg: msg.into(), labels: Vec::new(), extra: Document::new() }) }
    }

    pub fn with_label(mut self, label: &'static str) -> Self {
        self.detail.labels.push(label);
        self
    }

    pub fn with_extra(mut self, key: &str, value: impl Into<Bson>) -> Self {
        self.detail.extra.insert(key, value);
        self
    }

    // Codes from <https://www.mongodb.com/docs/manual/reference/error-codes/>.
    codes! {
        InternalError = 1,
        BadValue = 2,
        FailedToParse = 9,
        TypeMismatch = 14,
        AlreadyInitialized = 23,
        NamespaceNotFound = 26,
        CursorNotFound = 43,
        CommandNotFound = 59,
        WriteConcernFailed = 64,
        NodeNotFound = 74,
        NoReplicationEnabled = 76,
        InvalidReplicaSetConfig = 93,
        NotYetInitialized = 94,
        NotSecondary = 95,
        NewReplicaSetConfigurationIncompatible = 103,
        CommandFailed = 125,
        PrimarySteppedDown = 189,
        TransactionTooOld = 225,
        ExceededTimeLimit = 262,
        NotWritablePrimary = 10107,
        DuplicateKey = 11000,
        InterruptedDueToReplStateChange = 11602,
        NotPrimaryNoSecondaryOk = 13435,
        NotPrimaryOrSecondary = 13436,
        HostUnreachable = 6,
    }

    pub fn to_doc(&self) -> Document {
        let mut d = doc! { "ok": 0.0, "errmsg": self.detail.msg.clone(), "code": self.code,
        "codeName": self.code_name };
        if !self.detail.labels.is_empty() {
            d.insert("errorLabels", self.detail.labels.iter().map(|l| Bson::from(*l)).collect::<Vec<_>>());
        }
        for (k, v) in &self.detail.extra {
            d.insert(k.clone(), v.clone());
        }
        d
    }
}

impl std::fmt::Display for CmdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code_name, self.code, self.detail.msg)
    }
}

impl From<std::io::Error> for CmdError {
    fn from(e: std::io::Error) -> Self {
        CmdError::InternalError(format!("storage: {e}"))
    }
}

pub type CmdResult<T = Document> = Result<T, CmdError>;
