"""Communications policy: what the exchange consults at fixed points of a request.

Each concern is its own module with a narrow interface, compiled once per
service (`retries.ServicePolicy`) or per client (accrual, requeues), so the
data path holds one object and asks it questions; a route whose policy is the
default pays only for the checks that default implies.

- `classifiers`: success / failure / retryable, by kind (on response head, on failure)
- `backoff`: constant, decorrelated-jittered, equal-jittered delays (before a retry,
  when accrual removes an endpoint)
- `budget`: Finagle's token retry budget (deposit per request, withdraw per retry)
- `retries`: service retries = classifier + budget + backoff + replay-buffer limit
  + stats (before dispatch, on response head, on failure, on completion)
- `accrual`: failure accrual, endpoints leave the balancer and are probed back
  (on completion, on failure)
- `requeues`: the client's requeue budget for connection-level failures
- `deadline`: `l5d-ctx-deadline`, read, tightened, passed on (before dispatch)
- `shedding`: server `maxConcurrentRequests` (on accepting a request)
"""
