// Creates a meeting through the API and shows its two links.
const button = document.getElementById("create");
const status = document.getElementById("status");
button.addEventListener("click", async () => {
  status.textContent = "Creating…";
  try {
    const response = await fetch("/api/meetings", { method: "POST" });
    if (!response.ok) throw new Error(`server answered ${response.status}`);
    const meeting = await response.json();
    document.getElementById("join").textContent = meeting.join_url;
    document.getElementById("host").textContent = meeting.host_url;
    document.getElementById("links").hidden = false;
    status.textContent = "";
  } catch (e) {
    status.textContent = `Could not create a meeting: ${e.message}`;
  }
});
