//! An upstream's answer streamed to the client under the request's deadline.
//!
//! The body carries the request's bulkhead slot and circuit breaker permit to
//! its end: the slot is freed and the outcome recorded when the last byte has
//! gone (a success), when the upstream fails or the deadline passes mid-body
//! (a failure: a cut answer is no answer), or when the client goes away (not
//! recorded: that says nothing about the upstream). A client that stops
//! reading stops hyper from polling the body, so the body alone cannot time
//! out then; the connection's write deadline ([`crate::client_conn`]) ends it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use rempart::bulkhead::OwnedBulkheadPermit;
use rempart::circuit_breaker::OwnedPermit;
use tokio::time::{Instant, Sleep};

pin_project! {
    /// A response body that ends, with an error, once its deadline passes,
    /// holding the request's bulkhead slot and breaker permit until it ends.
    #[derive(Debug)]
    pub struct DeadlineBody<B> {
        // `None` once ended: the upstream connection goes with it.
        inner: Option<B>,
        at: Instant,
        // The timer, made and armed only when the upstream makes the body
        // wait: a body read in one go costs no timer (even an unarmed one
        // takes the timer driver's lock when dropped). Boxed: a `Sleep` is
        // larger than the rest of the body, and hyper moves the response
        // (body included) several times per request.
        timer: Option<Pin<Box<Sleep>>>,
        slot: Option<OwnedBulkheadPermit>,
        permit: Option<OwnedPermit>,
    }
}

impl<B: Body<Data = Bytes, Error = io::Error> + Unpin> DeadlineBody<B> {
    /// `body`, cut off at `deadline`, holding `slot` and `permit` (the
    /// breaker's, when the outcome is still to be recorded) until it ends.
    pub fn new(
        body: B,
        deadline: Instant,
        slot: Option<OwnedBulkheadPermit>,
        permit: Option<OwnedPermit>,
    ) -> Self {
        let empty = body.is_end_stream();
        let mut this = DeadlineBody {
            inner: Some(body),
            at: deadline,
            timer: None,
            slot,
            permit,
        };
        // hyper never polls a body that says it is empty (HEAD, 204, 304).
        if empty {
            this.slot = None;
            if let Some(p) = this.permit.take() {
                p.success();
            }
        }
        this
    }

    /// When the body is cut off.
    pub fn deadline(&self) -> Instant {
        self.at
    }

    /// Whether the body still holds a bulkhead slot.
    pub fn holds_slot(&self) -> bool {
        self.slot.is_some()
    }
}

/// Ends the body: frees the slot and records `clean` on the permit.
fn finish<B>(
    inner: &mut Option<B>,
    slot: &mut Option<OwnedBulkheadPermit>,
    permit: &mut Option<OwnedPermit>,
    clean: bool,
) {
    *inner = None;
    *slot = None;
    if let Some(p) = permit.take() {
        if clean { p.success() } else { p.failure() }
    }
}

fn expired() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the request's deadline passed before the upstream's answer was sent",
    )
}

impl<B: Body<Data = Bytes, Error = io::Error> + Unpin> Body for DeadlineBody<B> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.project();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // A client reading slowly keeps the upstream ready: the clock is read
        // on each frame, the timer only armed when the upstream is not.
        if *this.at <= Instant::now() {
            finish(this.inner, this.slot, this.permit, false);
            return Poll::Ready(Some(Err(expired())));
        }
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(None) => {
                finish(this.inner, this.slot, this.permit, true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                finish(this.inner, this.slot, this.permit, false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                // hyper may stop polling once the body says it is done.
                if inner.is_end_stream() {
                    finish(this.inner, this.slot, this.permit, true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(*this.at)));
                let expired_now = timer.as_mut().poll(cx).is_ready();
                if expired_now {
                    finish(this.inner, this.slot, this.permit, false);
                    return Poll::Ready(Some(Err(expired())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(B::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), B::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use rempart::CircuitBreaker;
    use rempart::bulkhead::Bulkhead;
    use std::time::Duration;

    fn parts() -> (Bulkhead, CircuitBreaker) {
        let bulkhead = Bulkhead::builder().max_concurrent(1).build().unwrap();
        let breaker = CircuitBreaker::builder().build().unwrap();
        (bulkhead, breaker)
    }

    /// `inner` due in 2 s, holding a slot of `bulkhead` and a permit of `breaker`.
    fn held<B: Body<Data = Bytes, Error = io::Error> + Unpin>(
        inner: B,
        bulkhead: &Bulkhead,
        breaker: &CircuitBreaker,
    ) -> DeadlineBody<B> {
        DeadlineBody::new(
            inner,
            Instant::now() + Duration::from_secs(2),
            Some(bulkhead.try_acquire_owned().unwrap()),
            Some(breaker.try_acquire_owned().unwrap()),
        )
    }

    /// One frame, then silence from the upstream.
    #[derive(Debug)]
    struct Stalls(bool);
    impl Body for Stalls {
        type Data = Bytes;
        type Error = io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            if self.0 {
                Poll::Pending
            } else {
                self.0 = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"half")))))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_stalling_mid_body_is_cut_at_the_deadline_and_frees_its_slot() {
        let (bulkhead, breaker) = parts();
        let body = held(Stalls(false), &bulkhead, &breaker);
        let started = Instant::now();
        let err = body.collect().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(bulkhead.in_flight(), 0, "the slot is freed");
        assert_eq!(breaker.metrics().failed_calls, 1, "a cut body is a failure");
    }

    /// A whole body, as an upstream body would end: `io::Error` errors.
    fn whole(
        text: &'static str,
    ) -> http_body_util::combinators::MapErr<Full<Bytes>, fn(std::convert::Infallible) -> io::Error>
    {
        Full::new(Bytes::from_static(text.as_bytes())).map_err(|e| match e {})
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_read_to_its_end_is_a_success_and_frees_its_slot() {
        let (bulkhead, breaker) = parts();
        let body = held(whole("report"), &bulkhead, &breaker);
        assert!(body.holds_slot());
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"report");
        assert_eq!(bulkhead.in_flight(), 0);
        let m = breaker.metrics();
        assert_eq!((m.successful_calls, m.failed_calls), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_body_hyper_never_polls_is_a_success_at_once() {
        let (bulkhead, breaker) = parts();
        let body = held(whole(""), &bulkhead, &breaker);
        assert!(!body.holds_slot());
        assert_eq!(breaker.metrics().successful_calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_going_away_mid_body_frees_the_slot_and_judges_nothing() {
        let (bulkhead, breaker) = parts();
        let body = held(Stalls(false), &bulkhead, &breaker);
        let mut body = Box::pin(body);
        assert!(body.frame().await.unwrap().is_ok());
        drop(body);
        assert_eq!(bulkhead.in_flight(), 0);
        let m = breaker.metrics();
        assert_eq!((m.successful_calls, m.failed_calls), (0, 0));
    }
}
