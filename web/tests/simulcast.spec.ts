// Simulcast end to end: a browser sends its camera in three layers, another tells the SFU how
// big its tile is, and the SFU forwards the layer that fits. Real server, Debian's Chromium.

import { expect, test } from '@playwright/test';
import { admit, join, openBrowser, pageLayers, pageMedia, startServer, waitFor, waitForMedia, type Participant, type RunningServer } from './harness';

/**
 * Waits until `viewer` decodes frames from `publisherId` whose width passes `fits`, with
 * framesDecoded still going up between two looks: the layer really flows, it is not the size
 * of a frame decoded long ago.
 */
async function waitForWidth(viewer: Participant, publisher: Participant, publisherId: string, what: string, fits: (width: number) => boolean, timeoutMs: number) {
  let before = -1;
  return waitFor(
    `${viewer.name} to decode ${what} from ${publisher.name}`,
    async () => {
      const remote = (await pageMedia(viewer.page)).remote[publisherId];
      if (!remote) return null;
      const moving = before >= 0 && remote.framesDecoded > before;
      before = remote.framesDecoded;
      if (moving && fits(remote.frameWidth)) return remote;
      // The failure message shows what was decoded and what each side said and sent.
      const [told, sent] = await Promise.all([pageLayers(viewer.page, publisherId), pageLayers(publisher.page, null)]);
      throw new Error(
        `decoding ${remote.frameWidth}x${remote.frameHeight} (${remote.framesDecoded} frames); ${viewer.name} told the SFU ${JSON.stringify(told.told)}; ` +
          `${publisher.name} was asked for ${JSON.stringify(sent.asked)} and sends ${JSON.stringify(sent.sending)}`,
      );
    },
    timeoutMs,
    500,
  );
}

test.describe('simulcast: each viewer gets the layer its tile needs', () => {
  let server: RunningServer;
  let sender: Participant;
  let viewer: Participant;

  test.beforeAll(async () => {
    server = await startServer();
    [sender, viewer] = await Promise.all([openBrowser('sender'), openBrowser('viewer')]);
  });

  test.afterAll(async () => {
    await Promise.all([sender, viewer].map((p) => p?.close()));
    await server?.stop();
  });

  test('a small tile gets the low layer, the high one after it is enlarged', async () => {
    const m = await server.createMeeting();
    // The sender's fake camera opens at 1280x720 (the app asks for it): layers of 320, 640, 1280.
    await join(sender, m.host_url);
    await join(viewer, m.join_url);
    await admit(sender, 'viewer');
    await waitForMedia(viewer, 1);
    const senderId = String((await pageMedia(sender.page)).ownId);
    const tile = viewer.page.locator(`figure.tile[data-tile="${senderId}"]`);
    await expect(tile).toBeVisible();

    // A thumbnail: 160x90 CSS pixels (the grid would otherwise stretch it to its row; no border,
    // so the video inside is exactly that).
    await tile.evaluate((el: HTMLElement) => {
      el.style.cssText = 'width: 160px; height: 90px; min-height: 0; border: 0';
    });
    const small = await waitFor(
      'the viewer to tell the SFU its tile of the sender is 160x90',
      async () => {
        const { told } = await pageLayers(viewer.page, senderId);
        return told && told.width === 160 && told.height === 90 && told.visible ? told : null;
      },
      10_000,
    );
    const low = await waitForWidth(viewer, sender, senderId, 'the low layer (at most 320 wide)', (w) => w > 0 && w <= 320, 40_000);
    console.log(`tile ${small.width}x${small.height} (mid ${small.mid}): decoding ${low.frameWidth}x${low.frameHeight}, ${low.framesDecoded} frames`);

    // The whole window: 1280x720.
    await tile.evaluate((el: HTMLElement) => {
      el.style.cssText = 'position: fixed; inset: 0; width: 100vw; height: 100vh; min-height: 0; border: 0; z-index: 5';
    });
    const large = await waitFor(
      'the viewer to tell the SFU its tile of the sender fills the window',
      async () => {
        const { told } = await pageLayers(viewer.page, senderId);
        return told && told.width === 1280 && told.height === 720 && told.visible ? told : null;
      },
      10_000,
    );
    const high = await waitForWidth(viewer, sender, senderId, 'the high layer (1280 wide)', (w) => w >= 1280, 40_000);
    const sent = await pageLayers(sender.page, null);
    console.log(`tile ${large.width}x${large.height}: decoding ${high.frameWidth}x${high.frameHeight}, ${high.framesDecoded} frames; the sender was asked for ${JSON.stringify(sent.asked)} and sends ${JSON.stringify(sent.sending)}`);
  });
});
