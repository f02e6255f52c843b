// Progressive enhancement: every page works without it, but for passkeys, which need the
// browser's script API.
"use strict";

// A "send the code again" button enabled when its cooldown is over, so the visitor need not
// reload the page.
document.addEventListener("DOMContentLoaded", function () {
  var wait = document.getElementById("resend-wait");
  var button = document.getElementById("resend-button");
  if (!wait || !button) return;
  var seconds = parseInt(wait.getAttribute("data-wait"), 10);
  if (!(seconds > 0)) return;
  window.setTimeout(function () {
    button.disabled = false;
    wait.textContent = wait.getAttribute("data-ready");
  }, seconds * 1000);
});

// Passkeys (WebAuthn). A form with data-passkey="create" carries auth's options for a new
// passkey in data-options; one with data-passkey="get" fetches options for signing in
// from data-options-url. On submit the browser makes or uses the passkey, and the form is
// posted with its answer, as WebAuthn's JSON form, in the `credential` field. The options
// and the answer are WebAuthn Level 3's JSON forms: binary values in base64url.
//
// A "get" form with data-passkey-autofill also asks, as soon as the page is shown, for a
// passkey the visitor picks among the address field's suggestions (WebAuthn's conditional
// mediation; the field's autocomplete names "webauthn"). That request waits, unseen, for
// as long as the page is open: it is renewed before its options run out, and given up
// when the form's button asks in its own right (a browser serves one request at a time).
(function () {
  function bytes(text) {
    var plain = text.replace(/-/g, "+").replace(/_/g, "/");
    var raw = window.atob(plain + "====".slice(plain.length % 4 || 4));
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out.buffer;
  }

  function text(buffer) {
    var view = new Uint8Array(buffer);
    var raw = "";
    for (var i = 0; i < view.length; i++) raw += String.fromCharCode(view[i]);
    return window.btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withIds(list) {
    return (list || []).map(function (item) {
      return Object.assign({}, item, { id: bytes(item.id) });
    });
  }

  function creationOptions(json) {
    return Object.assign({}, json, {
      challenge: bytes(json.challenge),
      user: Object.assign({}, json.user, { id: bytes(json.user.id) }),
      excludeCredentials: withIds(json.excludeCredentials),
    });
  }

  function requestOptions(json) {
    return Object.assign({}, json, {
      challenge: bytes(json.challenge),
      allowCredentials: withIds(json.allowCredentials),
    });
  }

  function answer(credential) {
    var response = credential.response;
    var json = { clientDataJSON: text(response.clientDataJSON) };
    if (response.attestationObject) {
      json.attestationObject = text(response.attestationObject);
      json.transports = response.getTransports ? response.getTransports() : [];
    } else {
      json.authenticatorData = text(response.authenticatorData);
      json.signature = text(response.signature);
      json.userHandle = response.userHandle ? text(response.userHandle) : null;
    }
    return {
      id: credential.id,
      rawId: text(credential.rawId),
      type: credential.type,
      response: json,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
    };
  }

  // A refusal of ours to show as it is (the server's words), rather than a browser's.
  function Said(message) {
    this.message = message;
  }

  function options(form, signal) {
    if (form.getAttribute("data-passkey") === "create") {
      return Promise.resolve(form.getAttribute("data-options")).then(JSON.parse);
    }
    var body = new URLSearchParams();
    body.set("csrf", form.elements.csrf.value);
    return window
      .fetch(form.getAttribute("data-options-url"), {
        method: "POST",
        body: body,
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        signal: signal,
      })
      .then(function (reply) {
        return reply.json().then(
          function (data) {
            if (!reply.ok || !data.publicKey) throw new Said(data.message);
            return data.publicKey;
          },
          function () {
            // A page, not JSON: the form's token refused (the session ran out meanwhile).
            throw new Said(reply.status === 403 ? form.getAttribute("data-error-expired") : null);
          }
        );
      });
  }

  // The browser's failure, in the page's words.
  function explained(form, failure) {
    if (failure instanceof Said && failure.message) return failure.message;
    var name = failure && failure.name;
    if (name === "NotAllowedError") return form.getAttribute("data-error-cancelled");
    if (name === "InvalidStateError" && form.hasAttribute("data-error-exists")) {
      return form.getAttribute("data-error-exists"); // a passkey of this account already
    }
    return form.getAttribute("data-error-failed");
  }

  var sending = false; // an answer is on its way: nothing else starts

  function send(form, credential) {
    sending = true;
    form.querySelector("button[type=submit]").disabled = true;
    form.elements.credential.value = JSON.stringify(answer(credential));
    form.submit(); // fires no submit event
  }

  var waiting = null; // the AbortController of the autofill request, while it waits

  function giveUpAutofill() {
    if (waiting) waiting.abort();
    waiting = null;
  }

  // When to ask again: before auth's challenge expires (the browser waits for ever on a
  // conditional request), between half a minute and a day whatever the options say.
  function renewal(json) {
    var ms = json.timeout > 0 ? json.timeout * 0.8 : 240000;
    return Math.min(Math.max(ms, 30000), 86400000);
  }

  function autofill(form) {
    var able = window.PublicKeyCredential && PublicKeyCredential.isConditionalMediationAvailable;
    if (!able || sending || !form.hasAttribute("data-passkey-autofill")) return;
    giveUpAutofill();
    var control = new AbortController();
    waiting = control;
    Promise.resolve(able.call(PublicKeyCredential))
      .then(function (available) {
        if (!available) throw new Error("no autofill");
        return options(form, control.signal);
      })
      .then(function (json) {
        if (control.signal.aborted) throw new Error("given up");
        window.setTimeout(function () {
          renew(form, control);
        }, renewal(json));
        return navigator.credentials.get({
          mediation: "conditional",
          signal: control.signal,
          publicKey: requestOptions(json),
        });
      })
      .then(function (credential) {
        if (waiting !== control || sending) return; // given up meanwhile: the button's turn
        waiting = null;
        if (credential) send(form, credential);
      })
      .catch(function () {
        // Given up, or the browser declined: the button is still there, and says why.
        if (waiting === control) waiting = null;
      });
  }

  // Fresh options before these expire; a hidden page waits until it is shown again.
  function renew(form, control) {
    if (waiting !== control) return;
    if (!document.hidden) {
      autofill(form);
      return;
    }
    document.addEventListener("visibilitychange", function shown() {
      if (document.hidden) return;
      document.removeEventListener("visibilitychange", shown);
      if (waiting === control) autofill(form);
    });
  }

  function run(form, button) {
    var creating = form.getAttribute("data-passkey") === "create";
    // An assertive live region, present (empty) from the start rather than an alert
    // shown on failure: emptied here and filled in a later task, so that screen readers
    // announce each failure, the same one again included.
    var error = form.querySelector("[data-passkey-error]");
    error.textContent = "";
    button.disabled = true;
    giveUpAutofill();
    options(form)
      .then(function (json) {
        return creating
          ? navigator.credentials.create({ publicKey: creationOptions(json) })
          : navigator.credentials.get({ publicKey: requestOptions(json) });
      })
      .then(function (credential) {
        if (!credential) throw new Error("no credential");
        send(form, credential);
      })
      .catch(function (failure) {
        button.disabled = false;
        error.textContent = explained(form, failure);
        autofill(form);
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var able = !!(window.PublicKeyCredential && navigator.credentials && window.fetch);
    document.querySelectorAll("[data-passkey-only]").forEach(function (element) {
      element.hidden = !able;
    });
    document.querySelectorAll("[data-passkey-unsupported]").forEach(function (element) {
      element.hidden = able;
    });
    if (!able) return;
    document.querySelectorAll("form[data-passkey]").forEach(function (form) {
      var button = form.querySelector("button[type=submit]");
      form.addEventListener("submit", function (event) {
        event.preventDefault(); // the answer is sent by form.submit(), which skips this
        if (!button.disabled) run(form, button);
      });
      autofill(form);
    });
  });

  // Back to a page kept in the browser's cache: an answer it posted is spent, so the form
  // starts afresh.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    sending = false;
    document.querySelectorAll("form[data-passkey]").forEach(function (form) {
      form.elements.credential.value = "";
      form.querySelector("button[type=submit]").disabled = false;
      form.querySelector("[data-passkey-error]").textContent = "";
      autofill(form); // the one the page had ended when it was left
    });
  });
})();
