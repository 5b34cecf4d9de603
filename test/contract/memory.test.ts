import { createMemoryStore } from '../../src/store/memory-store.ts'
import { cacheContract, storeContract } from './store-contract.ts'

storeContract('memory store', async () => ({ store: createMemoryStore(), close: async () => {} }))
cacheContract('memory store', async () => ({ store: createMemoryStore(), close: async () => {} }))
