/**
 * Calls to the provider from a viewer trigger must end before CloudFront's 5 s limit, or the viewer
 * gets CloudFront's own error page instead of Gatehouse's clear 503. Every call shares the budget of
 * the invocation that made it; idempotent GETs (discovery, JWKS) get short attempts and a retry,
 * token-endpoint POSTs get one attempt: an authorization code and a rotating refresh token are
 * single use, so a retry after a lost answer would only be refused.
 */

export interface EdgeFetchOptions {
  /** Time for all provider calls of one invocation. Default 4000 ms (viewer triggers: 5 s at most). */
  budgetMs?: number
  /** One GET attempt gives up after this long. Default 1500 ms. */
  attemptTimeoutMs?: number
  /** Extra attempts for a GET that failed to connect or got a 5xx. Default 1. */
  retries?: number
  /** A retry is only started with at least this much budget left. Default 500 ms. */
  minRetryMs?: number
  /** Wall-clock milliseconds (network time is real even when a test freezes the session clock). */
  now?: () => number
}

export interface EdgeFetch {
  fetch: typeof fetch
  /** Starts the budget of a new invocation (Lambda runs one event at a time per instance). */
  startInvocation(): void
}

export function createEdgeFetch(inner: typeof fetch, options: EdgeFetchOptions = {}): EdgeFetch {
  const budgetMs = options.budgetMs ?? 4000
  const attemptTimeoutMs = options.attemptTimeoutMs ?? 1500
  const retries = options.retries ?? 1
  const minRetryMs = options.minRetryMs ?? 500
  const now = options.now ?? Date.now
  let deadline = now() + budgetMs

  const edgeFetch = (async (input: Parameters<typeof fetch>[0], init: RequestInit = {}) => {
    const method = (init.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase()
    const idempotent = method === 'GET' || method === 'HEAD'
    const attempts = idempotent ? 1 + retries : 1
    for (let attempt = 1; ; attempt++) {
      const left = deadline - now()
      if (left <= 0) throw new DOMException('the invocation spent its time budget', 'TimeoutError')
      const signals = [AbortSignal.timeout(idempotent ? Math.min(left, attemptTimeoutMs) : left)]
      if (init.signal) signals.push(init.signal)
      const canRetry = () => attempt < attempts && deadline - now() >= minRetryMs && !init.signal?.aborted
      try {
        const response = await inner(input, { ...init, signal: AbortSignal.any(signals) })
        if (response.status < 500 || !canRetry()) return response
        await response.body?.cancel()
      } catch (err) {
        if (!canRetry()) throw err
      }
    }
  }) as typeof fetch

  return {
    fetch: edgeFetch,
    startInvocation() {
      deadline = now() + budgetMs
    },
  }
}
