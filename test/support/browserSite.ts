import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser } from 'playwright-core';

/** Debian's chromium (scripts/install.sh installs it). */
const CHROMIUM = '/usr/bin/chromium';

/** A headless Chromium and a site it visits, served here on loopback. */
export interface BrowserSite {
  browser: Browser;
  /** `localhost`, not 127.0.0.1 where the API is: the site is another origin, as a customer's is. */
  url: string;
  close(): Promise<void>;
}

export async function startBrowserSite(serve: (req: IncomingMessage, res: ServerResponse) => void | Promise<void>): Promise<BrowserSite> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const site = createServer((req, res) => void serve(req, res));
  await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', resolve));
  return {
    browser,
    url: `http://localhost:${(site.address() as AddressInfo).port}`,
    close: async () => {
      await browser.close();
      await new Promise((resolve) => site.close(resolve));
    },
  };
}
