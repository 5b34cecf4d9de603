import { hash } from 'node:crypto'

// The HTML the embedded IdP shows a browser: plain forms that work without JavaScript, no inline scripts,
// every interpolated value escaped, and a CSP that allows only the one stylesheet below.

const STYLE = `body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f4f4f5;color:#18181b}
main{max-width:22rem;margin:10vh auto;padding:2rem;background:#fff;border-radius:.5rem;box-shadow:0 1px 3px #0002}
h1{font-size:1.4rem;margin:0 0 1rem}label{display:block;margin:.75rem 0 .25rem}
input{box-sizing:border-box;width:100%;padding:.5rem;font:inherit;border:1px solid #a1a1aa;border-radius:.25rem}
button{margin-top:1.25rem;width:100%;padding:.6rem;font:inherit;border:0;border-radius:.25rem;background:#2563eb;color:#fff;cursor:pointer}
button.secondary{background:#e4e4e7;color:#18181b}.error{color:#b91c1c}`

const STYLE_HASH = `'sha256-${hash('sha256', STYLE, 'base64')}'`

/** Headers for every IdP page: no caching, no framing, no scripts, only our stylesheet. */
export const PAGE_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  // No form-action: Chromium applies it to the redirect after a form post, which leaves for the client.
  'content-security-policy': `default-src 'none'; style-src ${STYLE_HASH}; base-uri 'none'; frame-ancestors 'none'`,
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
})

/** Escapes text for HTML element content and double- or single-quoted attribute values. */
export function escapeHTML(value: string): string {
  return value
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;')
}

function layout(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHTML(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<main>
${body}
</main>
</body>
</html>
`
}

export interface SignInPageInput {
  /** Where the form posts to (absolute path). */
  action: string
  username?: string
  /** Shown above the form, e.g. after wrong credentials. */
  error?: string
}

/** The sign-in form: fields `username` and `password`, submit button `#sign-in`. */
export function signInPage({ action, username = '', error }: SignInPageInput): string {
  return layout(
    'Sign in',
    `<h1>Sign in</h1>
${error ? `<p class="error" role="alert">${escapeHTML(error)}</p>` : ''}
<form method="post" action="${escapeHTML(action)}">
<label for="username">Username</label>
<input id="username" name="username" autocomplete="username" maxlength="64" required${username ? '' : ' autofocus'} value="${escapeHTML(username)}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" maxlength="1024" required${username ? ' autofocus' : ''}>
<button id="sign-in" type="submit">Sign in</button>
</form>`,
  )
}

/**
 * The RP-initiated logout confirmation. `form` is oidc-provider's own `<form id="op.logoutForm">` holding the
 * xsrf token; the buttons go inside it so the page is one plain form.
 */
export function logoutPage(form: string): string {
  const buttons = `<button id="logout-confirm" type="submit" name="logout" value="yes">Sign out</button>
<button id="logout-cancel" class="secondary" type="submit">Stay signed in</button>`
  const closing = form.lastIndexOf('</form>')
  // Fallback should oidc-provider change its markup: buttons outside, tied to the form by its id.
  const merged =
    closing === -1
      ? `${form}\n${buttons.replaceAll('type="submit"', 'type="submit" form="op.logoutForm"')}`
      : `${form.slice(0, closing)}\n${buttons}\n${form.slice(closing)}`
  return layout(
    'Sign out',
    `<h1>Sign out?</h1>\n<p>You will be signed out of this sign-in service.</p>\n${merged}`,
  )
}

export function signedOutPage(): string {
  return layout('Signed out', '<h1>Signed out</h1>\n<p>You have been signed out.</p>')
}

/** An error page with the public error code and description only: never a stack or internal detail. */
export function errorPage(title: string, message: string): string {
  return layout(title, `<h1>${escapeHTML(title)}</h1>\n<p>${escapeHTML(message)}</p>`)
}
