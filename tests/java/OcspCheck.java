/*
 * OcspCheck: asks jpki-va's OCSP responder, through the JDK's own OCSP client, the revocation
 * status (失効情報, Act §17, §36) of sample certificates, and prints one line per certificate.
 *
 * Usage: java OcspCheck <ocsp-url> <list-file>
 *
 * Each line of <list-file> is "<cert.pem> <issuer.pem> [<as-of epoch seconds>] [responder=<signer.pem>]"; the
 * last names a Trusted Responder (RFC 6960 §4.2.2.2, PKIXRevocationChecker.setOcspResponderCert): the
 * successor's OCSP signer that answers for a generation whose CA key was compromised. Each certificate is
 * validated by the JDK's PKIX CertPathValidator with its issuing CA (self-signed, one per family and
 * key generation) as the trust anchor, as of now or of the given instant (PKIXParameters.setDate: a
 * certificate that has expired since is validated as of a moment it was valid, as a verifier does for
 * a signature made then; the JDK still asks the responder, and checks its answer, as of now), and
 * with a PKIXRevocationChecker in OCSP-only mode: ONLY_END_ENTITY, NO_FALLBACK (no CRL), OCSP
 * preferred, the responder URL overriding the certificates' AIA (http://127.0.0.1:8080).
 * The JDK (sun.security.provider.certpath.OCSP) builds the request (GET when short, as RFC 5019
 * asks, else POST; a nonce when -Djdk.security.certpath.ocspNonce=true), checks the responder's
 * signature and delegated-signer certificate, and reports the status. Printed per certificate:
 *
 *   good
 *   revoked <CRLReason enum name> <revocation time, epoch seconds>
 *   unknown                      (the responder said "unknown")
 *   error <reason>: <message>    (anything else, e.g. an unauthorized or unreachable responder)
 *
 * The party authenticates by mutual TLS (the JDK cannot send an Authorization header): the caller
 * passes -Djavax.net.ssl.keyStore and -Djavax.net.ssl.trustStore. One JVM checks every line.
 */

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.cert.CertPath;
import java.security.cert.CertPathValidator;
import java.security.cert.CertPathValidatorException;
import java.security.cert.CertPathValidatorException.BasicReason;
import java.security.cert.CertificateFactory;
import java.security.cert.CertificateRevokedException;
import java.security.cert.PKIXParameters;
import java.security.cert.PKIXRevocationChecker;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.util.Date;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

public final class OcspCheck {
    private final URI responder;
    private final CertificateFactory factory;
    private final CertPathValidator validator;
    private final Map<Path, X509Certificate> issuers = new HashMap<>();

    private OcspCheck(URI responder) throws Exception {
        this.responder = responder;
        this.factory = CertificateFactory.getInstance("X.509");
        this.validator = CertPathValidator.getInstance("PKIX");
    }

    private X509Certificate load(Path pem) throws Exception {
        try (InputStream in = Files.newInputStream(pem)) {
            return (X509Certificate) factory.generateCertificate(in);
        }
    }

    private X509Certificate issuer(Path pem) throws Exception {
        X509Certificate cached = issuers.get(pem);
        if (cached == null) {
            cached = load(pem);
            issuers.put(pem, cached);
        }
        return cached;
    }

    /** The status line of one certificate, validated against its issuer (the trust anchor) as of asOf (null: now). */
    private String check(Path certPem, Path issuerPem, Date asOf, Path responderPem) {
        try {
            X509Certificate cert = load(certPem);
            TrustAnchor anchor = new TrustAnchor(issuer(issuerPem), null);
            PKIXRevocationChecker revocation =
                    (PKIXRevocationChecker) validator.getRevocationChecker();
            revocation.setOcspResponder(responder);
            if (responderPem != null) {
                revocation.setOcspResponderCert(issuer(responderPem));
            }
            // OCSP preferred (no PREFER_CRLS), no CRL fallback, the end-entity certificate only.
            revocation.setOptions(EnumSet.of(
                    PKIXRevocationChecker.Option.ONLY_END_ENTITY,
                    PKIXRevocationChecker.Option.NO_FALLBACK));
            PKIXParameters params = new PKIXParameters(Set.of(anchor));
            params.setRevocationEnabled(true);
            if (asOf != null) {
                params.setDate(asOf);
            }
            params.addCertPathChecker(revocation);
            CertPath path = factory.generateCertPath(List.of(cert));
            validator.validate(path, params);
            return "good";
        } catch (CertPathValidatorException e) {
            CertificateRevokedException revoked = revokedCause(e);
            if (e.getReason() == BasicReason.REVOKED && revoked != null) {
                long when = Math.floorDiv(revoked.getRevocationDate().getTime(), 1000L);
                return "revoked " + revoked.getRevocationReason().name() + " " + when;
            }
            String message = String.valueOf(e.getMessage());
            // The JDK says "Certificate's revocation status is unknown" for an OCSP "unknown";
            // a network error or an error response is UNDETERMINED too, but is not "unknown".
            if (e.getReason() == BasicReason.UNDETERMINED_REVOCATION_STATUS
                    && message.toLowerCase(Locale.ROOT).contains("status is unknown")) {
                return "unknown";
            }
            return error(e.getReason() + ": " + describe(e));
        } catch (Exception e) {
            return error(describe(e));
        }
    }

    /** One list line: "<cert.pem> <issuer.pem> [<as-of epoch seconds>]". */
    private String checkLine(String line) {
        String[] parts = line.split("\\s+");
        Path responderPem = null;
        if (parts.length > 2 && parts[parts.length - 1].startsWith("responder=")) {
            responderPem = Path.of(parts[parts.length - 1].substring("responder=".length()));
            parts = java.util.Arrays.copyOf(parts, parts.length - 1);
        }
        if (parts.length != 2 && parts.length != 3) {
            return error("bad list line");
        }
        Date asOf = null;
        if (parts.length == 3) {
            try {
                asOf = new Date(Math.multiplyExact(Long.parseLong(parts[2]), 1000L));
            } catch (NumberFormatException | ArithmeticException e) {
                return error("bad as-of instant");
            }
        }
        return check(Path.of(parts[0]), Path.of(parts[1]), asOf, responderPem);
    }

    private static CertificateRevokedException revokedCause(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof CertificateRevokedException) {
                return (CertificateRevokedException) t;
            }
        }
        return null;
    }

    private static String describe(Throwable e) {
        StringBuilder out = new StringBuilder(e.getClass().getSimpleName())
                .append(' ').append(e.getMessage());
        for (Throwable t = e.getCause(); t != null; t = t.getCause()) {
            out.append(" <- ").append(t.getClass().getSimpleName()).append(' ').append(t.getMessage());
        }
        return out.toString();
    }

    private static String error(String message) {
        return "error " + message.replaceAll("\\s+", " ");
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: java OcspCheck <ocsp-url> <list-file> (lines: <cert.pem> <issuer.pem> [<as-of epoch s>])");
            System.exit(2);
        }
        OcspCheck checker = new OcspCheck(URI.create(args[0]));
        try (BufferedReader lines = Files.newBufferedReader(Path.of(args[1]), StandardCharsets.UTF_8)) {
            String line;
            while ((line = lines.readLine()) != null) {
                line = line.strip();
                if (line.isEmpty()) {
                    continue;
                }
                System.out.println(checker.checkLine(line));
            }
        } catch (IOException e) {
            System.err.println("cannot read " + args[1] + ": " + e.getMessage());
            System.exit(2);
        }
    }
}
