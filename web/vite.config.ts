import { resolve } from 'node:path';
import { defineConfig } from 'vite';

// The server sends a strict CSP (script-src 'self' 'wasm-unsafe-eval', style-src 'self'):
// no inline scripts or styles, no data: or blob: workers, nothing inlined as a data URL.
//
// Reproducible: file names come from content hashes and nothing writes a date, so the same
// sources give the same web/dist (`cargo xtask test` builds it twice and compares).
// The service worker (src/integrity/sw.ts) is a second entry with a stable name at the root,
// `/sw.js`, so that its scope is the whole site; it imports nothing at run time, so it comes
// out as one classic script.
export default defineConfig({
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    target: 'es2022',
    modulePreload: { polyfill: false },
    rollupOptions: {
      input: { index: resolve(import.meta.dirname, 'index.html'), sw: resolve(import.meta.dirname, 'src/integrity/sw.ts') },
      output: { entryFileNames: (chunk) => (chunk.name === 'sw' ? 'sw.js' : 'assets/[name]-[hash].js') },
    },
  },
  worker: { format: 'es' },
  server: { proxy: { '/api': 'http://127.0.0.1:8080', '/ws': { target: 'ws://127.0.0.1:8080', ws: true } } },
});
