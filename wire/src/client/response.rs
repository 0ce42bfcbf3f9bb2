//! Received responses, validated once and then read in place.

use crate::error::WireError;
use crate::frame::OwnedFrame;
use crate::messages::{ArchivedResponse, ArchivedWatchResponse, Response};

/// A response frame: owns the received bytes; `get()` reads the archived
/// response in place (keys and values borrow from the frame).
#[derive(Debug)]
pub struct ResponseFrame {
    frame: OwnedFrame,
}

impl ResponseFrame {
    /// Validates the payload as a `Response`.
    pub fn new(frame: OwnedFrame) -> Result<Self, WireError> {
        frame.access::<Response>()?;
        Ok(ResponseFrame { frame })
    }

    pub fn request_id(&self) -> u64 {
        self.frame.request_id()
    }

    /// True if more frames follow for this request id.
    pub fn more(&self) -> bool {
        self.frame.flags().more()
    }

    pub fn get(&self) -> &ArchivedResponse {
        // SAFETY: `new` validated these exact bytes as an archived `Response`
        // with bytecheck, and `OwnedFrame` never mutates its payload.
        unsafe { rkyv::access_unchecked::<ArchivedResponse>(self.frame.payload()) }
    }

    /// `Err(WireError::Api)` if the server answered with an error.
    pub fn into_result(self) -> Result<Self, WireError> {
        if let ArchivedResponse::Error(e) = self.get() {
            return Err(WireError::Api(e.to_owned_error()));
        }
        Ok(self)
    }

    /// Deserializes into the owned form.
    pub fn to_owned_response(&self) -> Result<Response, WireError> {
        self.get().to_owned_response()
    }
}

/// A frame known to carry `Response::Watch`.
#[derive(Debug)]
pub struct WatchFrame {
    frame: ResponseFrame,
}

impl WatchFrame {
    pub(crate) fn new(frame: ResponseFrame) -> Option<Self> {
        matches!(frame.get(), ArchivedResponse::Watch(_)).then_some(WatchFrame { frame })
    }

    pub fn get(&self) -> &ArchivedWatchResponse {
        match self.frame.get() {
            ArchivedResponse::Watch(w) => w,
            other => panic!("WatchFrame invariant broken: holds {}", other.name()),
        }
    }

    pub fn frame(&self) -> &ResponseFrame {
        &self.frame
    }

    pub fn into_frame(self) -> ResponseFrame {
        self.frame
    }

    /// Deserializes into the owned form.
    pub fn to_owned_watch(&self) -> Result<crate::messages::WatchResponse, WireError> {
        rkyv::deserialize::<_, rkyv::rancor::Error>(self.get()).map_err(|e| WireError::Validation {
            request_id: self.frame.request_id(),
            type_name: "WatchResponse",
            reason: e.to_string(),
        })
    }
}
