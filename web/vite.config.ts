import { defineConfig } from 'vite';

// The server sends a strict CSP (script-src 'self' 'wasm-unsafe-eval', style-src 'self'):
// no inline scripts or styles, no data: or blob: workers, nothing inlined as a data URL.
export default defineConfig({
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    target: 'es2022',
    modulePreload: { polyfill: false },
  },
  worker: { format: 'es' },
  server: { proxy: { '/api': 'http://127.0.0.1:8080', '/ws': { target: 'ws://127.0.0.1:8080', ws: true } } },
});
