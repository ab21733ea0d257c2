// Passkeys in the browser: sign-in by autofill or button on the sign-in
// page; add, rename and delete on the account page. Everything else on
// both pages works without this script.
(function () {
  "use strict";
  if (!window.PublicKeyCredential) {
    return;
  }

  function fromB64(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) {
      s += "=";
    }
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) {
      out[i] = bin.charCodeAt(i);
    }
    return out.buffer;
  }

  function toB64(buf) {
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) {
      bin += String.fromCharCode(bytes[i]);
    }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // Browsers without the WebAuthn Level 3 JSON helpers get the same by hand.
  function requestOptions(o) {
    if (PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(o);
    }
    var r = Object.assign({}, o);
    r.challenge = fromB64(o.challenge);
    return r;
  }

  function creationOptions(o) {
    if (PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(o);
    }
    var c = Object.assign({}, o);
    c.challenge = fromB64(o.challenge);
    c.user = Object.assign({}, o.user, { id: fromB64(o.user.id) });
    c.excludeCredentials = (o.excludeCredentials || []).map(function (d) {
      return Object.assign({}, d, { id: fromB64(d.id) });
    });
    return c;
  }

  function credentialJSON(cred) {
    if (cred.toJSON) {
      return cred.toJSON();
    }
    var r = cred.response, out = {
      id: cred.id, rawId: toB64(cred.rawId), type: cred.type,
      authenticatorAttachment: cred.authenticatorAttachment,
      clientExtensionResults: cred.getClientExtensionResults(),
      response: { clientDataJSON: toB64(r.clientDataJSON) }
    };
    if (r.attestationObject) {
      out.response.attestationObject = toB64(r.attestationObject);
      out.response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      out.response.authenticatorData = toB64(r.authenticatorData);
      out.response.signature = toB64(r.signature);
      if (r.userHandle) {
        out.response.userHandle = toB64(r.userHandle);
      }
    }
    return out;
  }

  // The page's words, in its language, come with the page.
  function msg(name) {
    var el = document.querySelector("[data-msg-" + name + "]");
    return el ? el.getAttribute("data-msg-" + name) : "";
  }

  function call(method, url, body) {
    return fetch(url, {
      method: method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (res) {
      if (res.status === 204) {
        return null;
      }
      return res.json().then(function (j) {
        if (!res.ok) {
          throw new Error(j.detail || msg("failed"));
        }
        return j;
      });
    });
  }

  // The sign-in page.
  var form = document.getElementById("passkey-form");
  if (form) {
    var prefix = form.getAttribute("data-prefix");
    var button = document.getElementById("passkey-button");
    var unknown = form.getAttribute("data-unknown");
    if (unknown && PublicKeyCredential.signalUnknownCredential) {
      // The passkey was deleted here: the browser stops offering it.
      PublicKeyCredential.signalUnknownCredential({ rpId: form.getAttribute("data-rp-id"), credentialId: unknown }).catch(function () {});
    }
    var pending = null;
    var signIn = function (mediation) {
      if (pending) {
        pending.abort();
      }
      var ctl = new AbortController();
      pending = ctl;
      return call("POST", prefix + "/passkeys/login/begin", {}).then(function (o) {
        var req = { publicKey: requestOptions(o.publicKey), signal: ctl.signal };
        if (mediation) {
          req.mediation = mediation;
        }
        return navigator.credentials.get(req);
      }).then(function (cred) {
        if (!cred) {
          return;
        }
        form.elements.passkey.value = JSON.stringify(credentialJSON(cred));
        form.submit();
      }).catch(function (err) {
        if (err && err.name !== "AbortError" && !mediation) {
          var status = document.getElementById("passkey-status");
          status.textContent = msg("not-used");
        }
      });
    };
    button.hidden = false;
    button.addEventListener("click", function () { signIn(""); });
    if (PublicKeyCredential.isConditionalMediationAvailable) {
      PublicKeyCredential.isConditionalMediationAvailable().then(function (ok) {
        if (ok) {
          signIn("conditional");
        }
      });
    }
  }

  // The account page.
  var section = document.getElementById("passkeys");
  if (section) {
    var base = section.getAttribute("data-prefix") + "/passkeys";
    var status = document.getElementById("passkey-status");
    var fail = function (err) {
      status.className = "error";
      status.textContent = err && err.name === "NotAllowedError" ? msg("not-added") : (err && err.message) || msg("wrong");
    };
    var add = document.getElementById("passkey-add");
    add.hidden = false;
    add.addEventListener("submit", function (ev) {
      ev.preventDefault();
      status.className = "";
      status.textContent = msg("prompt");
      call("POST", base + "/register/begin", { name: add.elements.name.value }).then(function (o) {
        return navigator.credentials.create({ publicKey: creationOptions(o.publicKey) });
      }).then(function (cred) {
        return call("POST", base + "/register/finish", credentialJSON(cred));
      }).then(function () {
        location.reload();
      }).catch(fail);
    });
    Array.prototype.forEach.call(section.querySelectorAll(".passkey-rename"), function (f) {
      f.hidden = false;
      f.addEventListener("submit", function (ev) {
        ev.preventDefault();
        call("PATCH", base + "/" + f.getAttribute("data-id"), { name: f.elements.name.value }).then(function () {
          location.reload();
        }).catch(fail);
      });
    });
    Array.prototype.forEach.call(section.querySelectorAll(".passkey-delete"), function (b) {
      b.hidden = false;
      b.addEventListener("click", function () {
        if (!confirm(msg("delete").replace("%s", b.getAttribute("data-name")))) {
          return;
        }
        call("DELETE", base + "/" + b.getAttribute("data-id")).then(function () {
          location.reload();
        }).catch(fail);
      });
    });
  }
})();
