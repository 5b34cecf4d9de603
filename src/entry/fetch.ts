/**
 * `gatehouse/fetch`: the decision core as a Web fetch handler (Workers, Deno, Bun), no Node API.
 * See docs/deploy-fetch-handler.md.
 *
 * @example
 * import { validateConfig } from 'gatehouse/config'
 * import { createFetchHandler } from 'gatehouse/fetch'
 * const handle = await createFetchHandler(validateConfig(input), { env: process.env })
 */
export { createFetchHandler, type FetchHandlerOptions } from '../adapters/fetch/handler.ts'
