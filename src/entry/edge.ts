/**
 * `gatehouse/edge`: the Lambda@Edge handlers that `gatehouse build-edge` bundles with a baked config.
 * See docs/deploy-lambda-edge.md.
 *
 * @example
 * import { createEdgeHandler } from 'gatehouse/edge'
 * export const handler = createEdgeHandler(bakedCheckAuthBundle)
 */
export type {
  CoreBundle,
  CoreFunctionName,
  EdgeBundle,
  EdgeFunctionName,
  HeadersBundle,
  ProviderCopy,
} from '../adapters/edge/bundle.ts'
export { EDGE_FUNCTIONS } from '../adapters/edge/bundle.ts'
export type {
  CloudFrontRequestEvent,
  CloudFrontRequestResult,
  CloudFrontResponse,
  CloudFrontResponseEvent,
} from '../adapters/edge/cloudfront.ts'
export { createEdgeHandler, type EdgeHandlerOptions } from '../adapters/edge/handler.ts'
export { createHttpHeadersHandler } from '../adapters/edge/http-headers.ts'
