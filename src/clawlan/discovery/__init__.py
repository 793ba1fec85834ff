"""mDNS on the LAN: the back end advertises itself, front ends browse for it.

``service`` names the DNS-SD type and TXT keys (the contract both sides share);
``advertiser`` registers the back end; ``watch`` is the one browse loop;
``browser`` picks a back end from it; ``identity`` is a server's or router's
own TLS certificate, and ``trust`` which fingerprints a front end accepts.
"""
