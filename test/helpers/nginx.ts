/** A real nginx for the forward-auth tests: the documented per-app server block, and a started process. */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { browserFetch } from './browser-fetch.ts'

export const NGINX = process.env['NGINX_PATH'] ?? '/usr/sbin/nginx'

/**
 * One server block per app host, as docs/apps.md and docs/deploy-forward-auth.md show it: /oauth2/ to
 * Gatehouse, the auth_request check with X-Forwarded-Host $host, and @sign_in for a 401.
 */
export function appServerBlock(name: string, port: number, gatehouse: string, app: string): string {
  return `
  server {
    listen 127.0.0.1:${port};
    server_name ${name};
    location /oauth2/ {
      proxy_pass ${gatehouse};
      proxy_set_header Host $host;
    }
    location = /oauth2/auth {
      internal;
      proxy_pass ${gatehouse};
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Forwarded-Uri $request_uri;
      proxy_set_header X-Original-URI "";
      proxy_set_header X-Forwarded-Method $request_method;
      proxy_set_header X-Forwarded-Host $host;
    }
    location / {
      auth_request /oauth2/auth;
      error_page 401 = @sign_in;
      auth_request_set $auth_user $upstream_http_x_auth_request_preferred_username;
      auth_request_set $auth_cookie $upstream_http_set_cookie;
      add_header Set-Cookie $auth_cookie;
      proxy_set_header X-Auth-Request-Preferred-Username $auth_user;
      proxy_pass ${app};
    }
    location @sign_in {
      rewrite ^ /oauth2/sign_in? break;
      proxy_pass ${gatehouse};
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-Uri $request_uri;
    }
  }`
}

/** Starts nginx with these server blocks in its `http {}`, and waits until `probe` answers. */
export function startNginx(servers: readonly string[], probe: string): Promise<ChildProcess> {
  return runNginx(
    (dir) => `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events {}
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
${servers.join('\n')}
}
`,
    probe,
  )
}

/**
 * Starts nginx on the whole config `conf` writes for a fresh prefix directory (its temp paths and pid
 * file go under it), and waits until `probe` answers.
 */
export async function runNginx(conf: (dir: string) => string, probe: string): Promise<ChildProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-nginx-'))
  for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, d))
  writeFileSync(join(dir, 'nginx.conf'), conf(dir))
  const nginx = spawn(NGINX, ['-p', dir, '-c', join(dir, 'nginx.conf')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let stderr = ''
  nginx.stderr!.on('data', (d) => (stderr += d))
  for (let i = 0; i < 200; i++) {
    const up = await browserFetch(probe).then(
      () => true,
      () => false,
    )
    if (up) return nginx
    if (nginx.exitCode !== null) throw new Error(`nginx exited: ${stderr}`)
    await new Promise((r) => setTimeout(r, 25))
  }
  nginx.kill('SIGTERM')
  throw new Error(`nginx did not answer at ${probe} within 5 s: ${stderr}`)
}
