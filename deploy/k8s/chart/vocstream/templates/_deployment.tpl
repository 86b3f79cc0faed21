{{/*
One vocstream Deployment. Called with a dict:
  root       the chart context (.)
  component  api | <stage> | lag-exporter
  module     python module to run (python -m <module>)
  replicas   replica count, or nil when KEDA owns it
  resources  requests/limits
  port       the HTTP port probed and scraped (API port, or the metrics port)
  portName   http | metrics
  env        extra env entries (list of {name, value})
Probes: /health (alive) and /ready (dependencies answer). Stages serve them on their metrics
port (shared/metrics.py's HTTP server).
*/}}
{{- define "vocstream.deployment" -}}
{{- $root := .root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "vocstream.componentName" . }}
  labels:
    {{- include "vocstream.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  {{- if not (kindIs "invalid" .replicas) }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "vocstream.selectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "vocstream.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
      annotations:
        # Roll the pods when the configuration changes.
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- include "vocstream.podSpecCommon" $root | nindent 6 }}
      terminationGracePeriodSeconds: 45
      containers:
        - name: {{ .component }}
          image: {{ include "vocstream.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["python", "-m", {{ .module | quote }}]
          envFrom:
            {{- include "vocstream.envFrom" $root | nindent 12 }}
          env:
            - name: VOC_SERVICE_NAME
              value: {{ .component | quote }}
            - name: VOC_INSTANCE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            {{- include "vocstream.secretEnv" (dict "root" $root "component" .component) | nindent 12 }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: {{ .portName }}
              containerPort: {{ .port }}
              protocol: TCP
          livenessProbe:
            httpGet:
              path: /health
              port: {{ .portName }}
            {{- toYaml $root.Values.probes.liveness | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /ready
              port: {{ .portName }}
            {{- toYaml $root.Values.probes.readiness | nindent 12 }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "vocstream.tmpMount" $root | nindent 12 }}
      volumes:
        {{- include "vocstream.tmpVolume" $root | nindent 8 }}
{{- end }}
