use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::OwnedBulkheadPermit;

pin_project! {
    /// A response body that holds a bulkhead slot until the body has been
    /// read to its end, has failed, or is dropped: a streamed response keeps
    /// counting against the bulkhead for as long as it is being sent, not
    /// only until its headers are ready (the complaint in tower-http#447).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use rempart::bulkhead::{Bulkhead, PermitBody};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let bulkhead = Bulkhead::builder().max_concurrent(1).build().unwrap();
    /// let permit = bulkhead.try_acquire_owned().unwrap();
    /// let body = PermitBody::new(Full::new(Bytes::from_static(b"report")), permit);
    /// assert_eq!(bulkhead.in_flight(), 1, "the body holds the slot");
    /// let bytes = body.collect().await.unwrap().to_bytes();
    /// assert_eq!(&bytes[..], b"report");
    /// assert_eq!(bulkhead.in_flight(), 0, "the body ended: slot released");
    /// # });
    /// ```
    #[derive(Debug)]
    pub struct PermitBody<B> {
        #[pin]
        body: B,
        permit: Option<OwnedBulkheadPermit>,
    }
}

impl<B> PermitBody<B> {
    /// `body`, holding `permit` until it ends.
    pub fn new(body: B, permit: OwnedBulkheadPermit) -> Self {
        PermitBody {
            body,
            permit: Some(permit),
        }
    }

    /// `true` while the body still holds its slot.
    pub fn holds_slot(&self) -> bool {
        self.permit.is_some()
    }

    /// The wrapped body (the slot is released with the wrapper).
    pub fn into_inner(self) -> B {
        self.body
    }
}

impl<B: Body> Body for PermitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.body.as_mut().poll_frame(cx));
        match &frame {
            // The end, or a failure that ends the stream: free the slot now.
            None | Some(Err(_)) => drop(this.permit.take()),
            // hyper may stop polling once the body says it is done.
            Some(Ok(_)) if this.body.as_ref().is_end_stream() => drop(this.permit.take()),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
