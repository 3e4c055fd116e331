import { defineConfig } from "vite";

// The page is plain static files: `twofold serve` serves `dist/` with serve.public.static_dir.
export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // Browsers that ship fetch streams and private class fields, which the SDK needs anyway.
    target: "es2022",
  },
  server: { host: "127.0.0.1", port: 5173, strictPort: true },
});
